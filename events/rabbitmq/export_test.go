package rabbitmq

// Queues returns the queues that b declared, by name, with their topics,
// so that tests can delete them.
func Queues(b *Broker) map[string]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]string, len(b.queues))
	for q, topic := range b.queues {
		out[q] = topic
	}
	return out
}
