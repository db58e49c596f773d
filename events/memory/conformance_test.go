package memory_test

import (
	"context"
	"testing"

	"github.com/loamhq/loam/events/driver"
	"github.com/loamhq/loam/events/drivertest"
	"github.com/loamhq/loam/events/memory"
)

func TestConformance(t *testing.T) {
	drivertest.RunConformanceTests(t, func(context.Context, *testing.T) (drivertest.Harness, error) {
		return harness{}, nil
	})
}

// harness gives every test a Broker of its own; topics need no cleanup.
type harness struct{}

func (harness) MakeBroker(context.Context, *testing.T) (driver.Broker, error) {
	return memory.New(), nil
}
func (harness) NewTopicName(t *testing.T) string     { return "conformance.topic" }
func (harness) Disconnect(*testing.T) (func(), bool) { return nil, false }
func (harness) Close()                               {}
