package natsjs

// Deliveries exposes deliveries to the tests.
var Deliveries = deliveries
