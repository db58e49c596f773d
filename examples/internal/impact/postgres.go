package impact

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loamhq/loam/examples/internal/pgdb"
	capturesv1 "github.com/loamhq/loam/examples/proto/captures/v1"
	impactv1 "github.com/loamhq/loam/examples/proto/impact/v1"
)

// SchemaSQL creates the table of counted captures and its index, if they
// do not exist. The table is unqualified: it lands in the first schema of
// the session's search_path. Its primary key is what makes a capture
// delivered twice count once.
const SchemaSQL = `
CREATE TABLE IF NOT EXISTS impact_captures (
	capture_id   text PRIMARY KEY,
	planter_id   text NOT NULL,
	species      text NOT NULL,
	capture_time timestamptz
);
CREATE INDEX IF NOT EXISTS impact_captures_by_planter ON impact_captures (planter_id);`

// PostgresStore is a Store in PostgreSQL: one row per capture counted,
// and the counts computed when read (the service caches them).
type PostgresStore struct {
	pool *pgxpool.Pool
}

// NewPostgresStore creates the table (SchemaSQL) if needed and returns a
// store on pool. The pool stays the caller's.
func NewPostgresStore(ctx context.Context, pool *pgxpool.Pool) (*PostgresStore, error) {
	if _, err := pool.Exec(ctx, SchemaSQL); err != nil {
		return nil, fmt.Errorf("creating the impact_captures table: %w", err)
	}
	return &PostgresStore{pool: pool}, nil
}

// Apply implements Store.
func (s *PostgresStore) Apply(ctx context.Context, ev *capturesv1.CaptureCreated) (bool, error) {
	var at *time.Time
	if t := ev.GetCaptureTime(); t != nil {
		v := t.AsTime()
		at = &v
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO impact_captures (capture_id, planter_id, species, capture_time)
		VALUES ($1, $2, $3, $4) ON CONFLICT (capture_id) DO NOTHING`,
		ev.GetCaptureId(), ev.GetPlanterId(), ev.GetSpecies(), at)
	if err != nil {
		return false, pgdb.Unavailable(err)
	}
	return tag.RowsAffected() == 1, nil
}

const impactColumns = `planter_id, count(*), count(DISTINCT species), max(capture_time)`

// Impact implements Store.
func (s *PostgresStore) Impact(ctx context.Context, planterID string) (*impactv1.PlanterImpact, error) {
	rows, _ := s.pool.Query(ctx, `SELECT `+impactColumns+` FROM impact_captures WHERE planter_id = $1 GROUP BY planter_id`, planterID)
	all, err := pgx.CollectRows(rows, scanImpact)
	if err != nil {
		return nil, pgdb.Unavailable(err)
	}
	if len(all) == 0 {
		return &impactv1.PlanterImpact{PlanterId: planterID}, nil
	}
	return all[0], nil
}

// Top implements Store.
func (s *PostgresStore) Top(ctx context.Context, n int) ([]*impactv1.PlanterImpact, error) {
	rows, _ := s.pool.Query(ctx, `SELECT `+impactColumns+` FROM impact_captures
		GROUP BY planter_id ORDER BY count(*) DESC, planter_id COLLATE "C" LIMIT $1`, n)
	top, err := pgx.CollectRows(rows, scanImpact)
	return top, pgdb.Unavailable(err)
}

func scanImpact(row pgx.CollectableRow) (*impactv1.PlanterImpact, error) {
	p := &impactv1.PlanterImpact{}
	var last *time.Time
	if err := row.Scan(&p.PlanterId, &p.Captures, &p.Species, &last); err != nil {
		return nil, err
	}
	if last != nil {
		p.LastCaptureTime = timestamppb.New(*last)
	}
	return p, nil
}
