package events

import (
	"fmt"
	"mime"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// CloudEvents 1.0 attributes in binary content mode, as headers. The names
// are those of the CloudEvents NATS and HTTP protocol bindings (and the
// CloudEvents SDKs' readers of them): ce- and the attribute's name, except
// datacontenttype, which travels as content-type.
const (
	HeaderSpecVersion = "ce-specversion"
	HeaderID          = "ce-id"
	HeaderSource      = "ce-source"
	HeaderType        = "ce-type"
	HeaderTime        = "ce-time"
	HeaderSubject     = "ce-subject"
	HeaderDataSchema  = "ce-dataschema"
	HeaderContentType = "content-type"
	// HeaderPartitionKey carries the event's ordering key, as the
	// CloudEvents partitioning extension names it.
	HeaderPartitionKey = "ce-partitionkey"
)

// Headers that the dead-letter copy of an event carries besides the
// original's. They are transport headers, not CloudEvents attributes, so a
// CloudEvents reader sees the dead letter as the original event.
const (
	// HeaderDeadLetterReason is the error that made the subscription give
	// up, as text.
	HeaderDeadLetterReason = "loam-dead-letter-reason"
	// HeaderDeadLetterCause is why the event was dead-lettered, one of
	// CausePermanent, CauseMaxAttempts and CauseMalformed.
	HeaderDeadLetterCause = "loam-dead-letter-cause"
	// HeaderDeadLetterAttempts is how many times the event was delivered.
	HeaderDeadLetterAttempts = "loam-dead-letter-attempts"
	// HeaderDeadLetterTopic is the topic the event was consumed from.
	HeaderDeadLetterTopic = "loam-dead-letter-topic"
	// HeaderDeadLetterSubscription is the name of the subscription that
	// gave up.
	HeaderDeadLetterSubscription = "loam-dead-letter-subscription"
	// HeaderDeadLetterTime is when it gave up, in RFC 3339 form.
	HeaderDeadLetterTime = "loam-dead-letter-time"
)

// Causes of a dead letter, the values of HeaderDeadLetterCause and of the
// cause attribute of the loam.events.dead_letters counter.
const (
	CausePermanent   = "permanent"
	CauseMaxAttempts = "max_attempts"
	CauseMalformed   = "malformed"
)

// Content types of event data.
const (
	ContentTypeProtobuf = "application/protobuf"
	ContentTypeJSON     = "application/json"
)

const specVersion = "1.0"

// typeURLPrefix makes the dataschema of protobuf data: the type URL that
// the CloudEvents protobuf format recommends, made absolute as the
// dataschema attribute requires. Its last segment is the message's full
// name, as in a google.protobuf.Any.
const typeURLPrefix = "https://type.googleapis.com/"

var (
	// topicPattern is a topic name: dotted segments of letters, digits, '_'
	// and '-', as event types are. It is a valid NATS subject and AMQP
	// routing key.
	topicPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9][A-Za-z0-9_-]*)*$`)
	// extensionPattern is a CloudEvents extension attribute name.
	extensionPattern = regexp.MustCompile(`^[a-z0-9]{1,20}$`)
)

// reservedAttributes may not be set with WithExtension.
var reservedAttributes = map[string]bool{
	"specversion": true, "id": true, "source": true, "type": true, "time": true,
	"subject": true, "dataschema": true, "datacontenttype": true, "partitionkey": true,
	"data": true, "data_base64": true,
}

// attributes are the CloudEvents attributes of one event.
type attributes struct {
	id, source, typ, subject, dataSchema, contentType, key string
	time                                                   time.Time
	extensions                                             map[string]string
}

// encode writes a's attributes into h, percent-encoding values as the
// CloudEvents NATS and HTTP bindings require.
func (a *attributes) encode(h map[string]string) {
	h[HeaderSpecVersion] = specVersion
	h[HeaderID] = headerValue(a.id)
	h[HeaderSource] = headerValue(a.source)
	h[HeaderType] = headerValue(a.typ)
	h[HeaderTime] = a.time.UTC().Format(time.RFC3339Nano)
	h[HeaderContentType] = a.contentType
	if a.dataSchema != "" {
		h[HeaderDataSchema] = headerValue(a.dataSchema)
	}
	if a.subject != "" {
		h[HeaderSubject] = headerValue(a.subject)
	}
	if a.key != "" {
		h[HeaderPartitionKey] = headerValue(a.key)
	}
	for k, v := range a.extensions {
		h["ce-"+k] = headerValue(v)
	}
}

// decodeAttributes reads the CloudEvents attributes of a received message.
// The error wraps ErrMalformed.
func decodeAttributes(h map[string]string) (attributes, error) {
	var a attributes
	bad := func(format string, args ...any) (attributes, error) {
		return attributes{}, fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
	if v := h[HeaderSpecVersion]; v != specVersion {
		return bad("%s is %q, want %q", HeaderSpecVersion, v, specVersion)
	}
	for name, v := range h {
		attr, ok := strings.CutPrefix(name, "ce-")
		if !ok {
			continue
		}
		s, err := unescapeHeaderValue(v)
		if err != nil {
			return bad("%s: %v", name, err)
		}
		switch attr {
		case "specversion":
		case "id":
			a.id = s
		case "source":
			a.source = s
		case "type":
			a.typ = s
		case "subject":
			a.subject = s
		case "dataschema":
			a.dataSchema = s
		case "partitionkey":
			a.key = s
		case "time":
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return bad("%s %q is not an RFC 3339 time", name, s)
			}
			a.time = t
		default:
			if a.extensions == nil {
				a.extensions = map[string]string{}
			}
			a.extensions[attr] = s
		}
	}
	for _, req := range []struct{ name, v string }{{HeaderID, a.id}, {HeaderSource, a.source}, {HeaderType, a.typ}} {
		if req.v == "" {
			return bad("%s is missing", req.name)
		}
	}
	a.contentType = ContentTypeProtobuf
	if ct := h[HeaderContentType]; ct != "" && ct != ContentTypeProtobuf {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil {
			return bad("%s %q: %v", HeaderContentType, ct, err)
		}
		switch mt {
		case ContentTypeProtobuf, "application/x-protobuf":
		case ContentTypeJSON:
			a.contentType = ContentTypeJSON
		default:
			return bad("%s %q is neither %s nor %s", HeaderContentType, ct, ContentTypeProtobuf, ContentTypeJSON)
		}
	}
	return a, nil
}

// headerValue percent-encodes s as the CloudEvents NATS and HTTP bindings
// require: space, '"', '%' and every byte outside printable ASCII.
func headerValue(s string) string {
	i := 0
	for ; i < len(s); i++ {
		if mustEscape(s[i]) {
			break
		}
	}
	if i == len(s) {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	for ; i < len(s); i++ {
		c := s[i]
		if mustEscape(c) {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xF])
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

func mustEscape(c byte) bool { return c <= ' ' || c >= 0x7F || c == '"' || c == '%' }

// unescapeHeaderValue undoes headerValue. It also accepts a value in double
// quotes, as older writers sent, and rejects an encoding that is not UTF-8.
func unescapeHeaderValue(v string) (string, error) {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = strings.NewReplacer(`\\`, `\`, `\"`, `"`).Replace(v[1 : len(v)-1])
	}
	if !strings.Contains(v, "%") {
		return v, nil
	}
	b := make([]byte, 0, len(v))
	for i := 0; i < len(v); i++ {
		if v[i] != '%' {
			b = append(b, v[i])
			continue
		}
		if i+2 >= len(v) {
			return "", fmt.Errorf("truncated percent-encoding in %q", v)
		}
		hi, ok1 := unhex(v[i+1])
		lo, ok2 := unhex(v[i+2])
		if !ok1 || !ok2 {
			return "", fmt.Errorf("bad percent-encoding in %q", v)
		}
		b = append(b, hi<<4|lo)
		i += 2
	}
	if !utf8.Valid(b) {
		return "", fmt.Errorf("percent-encoded value %q is not UTF-8", v)
	}
	return string(b), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// checkTopic reports whether name is a valid topic name.
func checkTopic(name string) error {
	if !topicPattern.MatchString(name) {
		return fmt.Errorf("%w: topic %q is not dotted words of letters, digits, '_' and '-', such as \"org.example.orders.v1.order_placed\"", ErrInvalid, name)
	}
	return nil
}
