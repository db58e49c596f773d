package events

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/loamhq/loam/events/driver"
	"github.com/loamhq/loam/proto/loam/options"
)

// Topic publishes and subscribes to events of one protobuf message type T,
// a generated message marked with the loam.options.v1.event option. The
// option gives the event's CloudEvents type and the field that holds its
// ordering key; NewTopic reads and checks it once.
//
// A Topic is safe for concurrent use. It needs no closing of its own: the
// Bus closes what it opened.
type Topic[T proto.Message] struct {
	bus       *Bus
	s         *sender
	eventType string
	schema    string
	keyField  protoreflect.FieldDescriptor
	json      bool
}

// Event is an event as a handler receives it: the decoded message and its
// CloudEvents attributes.
type Event[T proto.Message] struct {
	// Data is the event's message.
	Data T
	// ID, Source, Type, Subject and Time are the CloudEvents attributes.
	// Subject is empty when the producer set none.
	ID, Source, Type, Subject string
	Time                      time.Time
	// Key is the ordering key, empty when the event type declares none.
	Key string
	// Extensions holds the CloudEvents extension attributes that are not
	// Loam's own, such as those set with WithExtension; nil when there are
	// none.
	Extensions map[string]string
	// Topic and Subscription say where the event was received.
	Topic, Subscription string
	// Attempt counts the deliveries of this event to the subscription, this
	// one included: 1 on the first.
	Attempt int
}

// Handler processes one event. Returning nil acknowledges it. An error
// makes the subscription retry the event, with backoff, until its attempts
// run out, and then dead-letter it; an error wrapped with Permanent
// dead-letters it at once. A panic counts as an error. ctx is cancelled when
// the handler timeout passes or the subscription's drain runs out of time.
type Handler[T proto.Message] func(ctx context.Context, e *Event[T]) error

// NewTopic returns the Topic of events of type T on bus, opening (and, when
// the driver needs it, provisioning) the topic on the broker. The topic's
// name is the event type unless WithTopicName says otherwise.
//
// It fails with ctx.Err() when ctx is done, an error that wraps ErrNotEvent
// when T lacks a valid event option, ErrInvalid for a bad topic name,
// ErrClosed after the Bus is closed, and the driver's error when the topic
// cannot be opened.
func NewTopic[T proto.Message](ctx context.Context, bus *Bus, opts ...TopicOption) (*Topic[T], error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var o topicOptions
	for _, opt := range opts {
		opt.applyTopic(&o)
	}
	var zero T
	md := zero.ProtoReflect().Descriptor()
	ev, err := options.Event(md)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotEvent, err)
	}
	t := &Topic[T]{bus: bus, eventType: ev.GetType(), schema: typeURLPrefix + string(md.FullName()), json: o.json}
	if f := ev.GetKeyField(); f != "" {
		t.keyField = md.Fields().ByName(protoreflect.Name(f))
	}
	name := o.name
	if name == "" {
		name = t.eventType
	}
	if err := checkTopic(name); err != nil {
		return nil, err
	}
	if t.s, err = bus.sender(ctx, name); err != nil {
		return nil, err
	}
	return t, nil
}

// Name returns the topic's name.
func (t *Topic[T]) Name() string { return t.s.name }

// EventType returns the CloudEvents type of the topic's events.
func (t *Topic[T]) EventType() string { return t.eventType }

// Publish sends msg as one event and returns once the broker has durably
// accepted it. The event gets a new UUIDv7 ID (or WithID's), the Bus's
// source, the event type, the current time and, when the type declares a
// key field, msg's key. The trace context of ctx travels with it.
//
// Transient broker errors are retried with backoff, with the same ID, until
// ctx is done or the Bus's publish timeout passes. Publish returns
// ctx.Err() when ctx ends first, ErrClosed once the Bus is closed, an error
// wrapping ErrInvalid for a bad extension, and otherwise the driver's error,
// wrapped.
func (t *Topic[T]) Publish(ctx context.Context, msg T, opts ...PublishOption) error {
	var o publishOptions
	for _, opt := range opts {
		opt.applyPublish(&o)
	}
	m, err := t.message(msg, &o)
	if err != nil {
		return err
	}
	return t.bus.send(ctx, t.s, []*driver.Message{m}, true)
}

// PublishBatch sends msgs, each as one event with its own new ID, and
// returns once the broker has accepted them all. The driver pipelines the
// batch, which makes it much faster than one Publish after another. On an
// error some of msgs may have been accepted; publishing the batch again
// sends new IDs, so retry with Publish and WithID when duplicates matter.
// Errors are those of Publish.
func (t *Topic[T]) PublishBatch(ctx context.Context, msgs []T) error {
	if len(msgs) == 0 {
		return nil
	}
	ms := make([]*driver.Message, len(msgs))
	var o publishOptions
	for i, msg := range msgs {
		m, err := t.message(msg, &o)
		if err != nil {
			return err
		}
		ms[i] = m
	}
	return t.bus.send(ctx, t.s, ms, true)
}

// message encodes msg as a driver message.
func (t *Topic[T]) message(msg T, o *publishOptions) (*driver.Message, error) {
	a := attributes{
		id:          o.id,
		source:      t.bus.o.source,
		typ:         t.eventType,
		subject:     o.subject,
		dataSchema:  t.schema,
		contentType: ContentTypeProtobuf,
		time:        o.time,
		extensions:  o.extensions,
	}
	if a.id == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return nil, fmt.Errorf("events: generating an event ID: %w", err)
		}
		a.id = id.String()
	}
	if a.time.IsZero() {
		a.time = time.Now()
	}
	for name := range a.extensions {
		if !extensionPattern.MatchString(name) || reservedAttributes[name] {
			return nil, fmt.Errorf("%w: extension %q is not 1-20 lower-case letters and digits, or is a reserved attribute", ErrInvalid, name)
		}
	}
	if t.keyField != nil {
		a.key = keyString(msg.ProtoReflect().Get(t.keyField))
	}
	var body []byte
	var err error
	if t.json {
		a.contentType = ContentTypeJSON
		body, err = protojson.Marshal(msg)
	} else {
		body, err = proto.Marshal(msg)
	}
	if err != nil {
		return nil, fmt.Errorf("events: encoding %s: %w", t.eventType, err)
	}
	h := make(map[string]string, 12+len(a.extensions))
	a.encode(h)
	return &driver.Message{ID: a.id, Key: a.key, Header: h, Body: body}, nil
}

// decode unmarshals event data. The error wraps ErrMalformed.
func (t *Topic[T]) decode(body []byte, contentType string) (T, error) {
	var zero T
	data := zero.ProtoReflect().New().Interface().(T)
	var err error
	if contentType == ContentTypeJSON {
		err = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(body, data)
	} else {
		err = proto.Unmarshal(body, data)
	}
	if err != nil {
		return zero, fmt.Errorf("%w: data of %s: %w", ErrMalformed, t.eventType, err)
	}
	return data, nil
}

// keyString formats the value of a key field, a string or an integer.
func keyString(v protoreflect.Value) string {
	switch x := v.Interface().(type) {
	case string:
		return x
	case int32:
		return strconv.FormatInt(int64(x), 10)
	case int64:
		return strconv.FormatInt(x, 10)
	case uint32:
		return strconv.FormatUint(uint64(x), 10)
	case uint64:
		return strconv.FormatUint(x, 10)
	}
	return fmt.Sprint(v.Interface())
}

// Subscribe starts handling the topic's events with h, under the
// subscription name: every name receives every event, and the processes
// subscribed with one name share them. The driver provisions the durable
// subscription, or resumes it. Events published before a name's first
// subscription are not delivered to it.
//
// Events of a type that declares a key field are handled one at a time per
// key, in the order received, when the driver keeps that order
// (Capabilities.OrderedPerKey), unless WithUnordered is given.
//
// Subscribe fails with ctx.Err() when ctx is done, ErrInvalid for a bad
// name or policy, ErrClosed once the Bus is closed, and the driver's error when the subscription cannot be
// opened. Close the Subscription, or the Bus, to stop it.
func (t *Topic[T]) Subscribe(ctx context.Context, name string, h Handler[T], opts ...SubscribeOption) (*Subscription, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, fmt.Errorf("%w: nil handler", ErrInvalid)
	}
	if !topicPattern.MatchString(name) {
		return nil, fmt.Errorf("%w: subscription name %q is not dotted words of letters, digits, '_' and '-'", ErrInvalid, name)
	}
	p := defaultPolicy()
	for _, opt := range t.bus.o.defaults {
		opt.applySubscribe(&p)
	}
	for _, opt := range opts {
		opt.applySubscribe(&p)
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	if p.deadLetter == "" && !p.noDeadLetter {
		p.deadLetter = t.s.name + ".dlq"
	}
	if !p.noDeadLetter {
		if err := checkTopic(p.deadLetter); err != nil {
			return nil, err
		}
	}
	ordered := t.keyField != nil && !p.unordered && t.bus.caps.OrderedPerKey
	decode := func(m *driver.Message, a *attributes) (func(context.Context, int) error, error) {
		if a.typ != t.eventType {
			return nil, fmt.Errorf("%w: type %q on a topic of %q", ErrMalformed, a.typ, t.eventType)
		}
		data, err := t.decode(m.Body, a.contentType)
		if err != nil {
			return nil, err
		}
		fresh := true
		return func(ctx context.Context, attempt int) error {
			if !fresh { // a retry: decode again, in case the last attempt changed the message
				data, _ = t.decode(m.Body, a.contentType)
			}
			fresh = false
			return h(ctx, &Event[T]{
				Data: data, ID: a.id, Source: a.source, Type: a.typ, Subject: a.subject, Time: a.time,
				Key: a.key, Extensions: maps.Clone(a.extensions), Topic: t.s.name, Subscription: name,
				Attempt: attempt,
			})
		}, nil
	}
	return t.bus.subscribe(ctx, t.s.name, name, p, ordered, decode)
}
