package captures

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loamhq/loam/events/pgoutbox"
	"github.com/loamhq/loam/examples/internal/pgdb"
	capturesv1 "github.com/loamhq/loam/examples/proto/captures/v1"
)

// SchemaSQL creates the captures table and its index, if they do not exist.
// The table is unqualified: it lands in the first schema of the session's
// search_path. seq orders captures by when they were stored.
const SchemaSQL = `
CREATE TABLE IF NOT EXISTS captures (
	seq          bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
	id           text PRIMARY KEY,
	planter_id   text NOT NULL,
	species      text NOT NULL,
	latitude     double precision NOT NULL,
	longitude    double precision NOT NULL,
	photo_url    text NOT NULL,
	capture_time timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS captures_by_planter ON captures (planter_id, seq DESC);`

// PostgresStore is a Store in PostgreSQL. Create stores a capture and
// runs its publish in one transaction, so that, with the events bus on the
// outbox of the same database (events.outbox), a capture and its
// CaptureCreated commit together or not at all.
type PostgresStore struct {
	pool *pgxpool.Pool
}

// NewPostgresStore creates the captures table (SchemaSQL) if needed and
// returns a store on pool. The pool stays the caller's.
func NewPostgresStore(ctx context.Context, pool *pgxpool.Pool) (*PostgresStore, error) {
	if _, err := pool.Exec(ctx, SchemaSQL); err != nil {
		return nil, fmt.Errorf("creating the captures table: %w", err)
	}
	return &PostgresStore{pool: pool}, nil
}

// Create implements Store: the capture's insert and publish share one
// transaction, which publish finds with pgoutbox.FromContext.
func (s *PostgresStore) Create(ctx context.Context, c *capturesv1.Capture, publish func(context.Context) error) error {
	return pgdb.Unavailable(s.create(ctx, c, publish))
}

func (s *PostgresStore) create(ctx context.Context, c *capturesv1.Capture, publish func(context.Context) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO captures (id, planter_id, species, latitude, longitude, photo_url, capture_time)
			VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING`,
			c.GetId(), c.GetPlanterId(), c.GetSpecies(), c.GetLocation().GetLatitude(), c.GetLocation().GetLongitude(),
			c.GetPhotoUrl(), c.GetCaptureTime().AsTime())
		if err != nil {
			return fmt.Errorf("storing capture %s: %w", c.GetId(), err)
		}
		if tag.RowsAffected() == 0 {
			return ErrExists
		}
		if publish == nil {
			return nil
		}
		return publish(pgoutbox.NewContext(ctx, tx))
	})
}

const columns = `id, planter_id, species, latitude, longitude, photo_url, capture_time`

// Get implements Store.
func (s *PostgresStore) Get(ctx context.Context, id string) (*capturesv1.Capture, error) {
	rows, _ := s.pool.Query(ctx, `SELECT `+columns+` FROM captures WHERE id = $1`, id)
	c, err := pgx.CollectExactlyOneRow(rows, scanCapture)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	return c, pgdb.Unavailable(err)
}

// List implements Store, newest first by seq.
func (s *PostgresStore) List(ctx context.Context, planterID, after string, limit int) ([]*capturesv1.Capture, bool, error) {
	var before *int64 // the seq of after, when there is one
	if after != "" {
		var seq int64
		err := s.pool.QueryRow(ctx, `SELECT seq FROM captures WHERE id = $1`, after).Scan(&seq)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, false, ErrNotFound
		}
		if err != nil {
			return nil, false, pgdb.Unavailable(err)
		}
		before = &seq
	}
	rows, _ := s.pool.Query(ctx, `SELECT `+columns+` FROM captures
		WHERE ($1 = '' OR planter_id = $1) AND ($2::bigint IS NULL OR seq < $2)
		ORDER BY seq DESC LIMIT $3`, planterID, before, limit+1)
	page, err := pgx.CollectRows(rows, scanCapture)
	if err != nil {
		return nil, false, pgdb.Unavailable(err)
	}
	if len(page) > limit {
		return page[:limit], true, nil
	}
	return page, false, nil
}

func scanCapture(row pgx.CollectableRow) (*capturesv1.Capture, error) {
	c := &capturesv1.Capture{Location: &capturesv1.Location{}}
	var at time.Time
	err := row.Scan(&c.Id, &c.PlanterId, &c.Species, &c.Location.Latitude, &c.Location.Longitude, &c.PhotoUrl, &at)
	c.CaptureTime = timestamppb.New(at)
	return c, err
}
