package service

import (
	"context"
	"time"

	"github.com/loamhq/loam/cache"
	"github.com/loamhq/loam/events"
)

// claimDeduper is the events.Deduper of events.dedup.store redis: the
// claims of the server's cache Store, shared by every replica of the
// service.
type claimDeduper struct{ c *cache.Claims }

func (d claimDeduper) Claim(ctx context.Context, key string, ttl time.Duration) (events.DedupState, error) {
	st, err := d.c.Claim(ctx, key, ttl)
	switch st {
	case cache.ClaimHeld:
		return events.DedupInProgress, err
	case cache.ClaimDone:
		return events.DedupDone, err
	}
	return events.DedupClaimed, err
}

func (d claimDeduper) Done(ctx context.Context, key string, window time.Duration) error {
	return d.c.Done(ctx, key, window)
}

func (d claimDeduper) Release(ctx context.Context, key string) error {
	return d.c.Release(ctx, key)
}
