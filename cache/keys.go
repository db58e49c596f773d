package cache

import (
	"reflect"
	"strconv"
)

// Key is the constraint on a cache's key type: a string or an integer, or
// a type defined on one. Keys travel in Redis key names and in
// invalidations as their decimal or string form, which the cache reads
// back; compose other keys into a string ("tenant/42").
type Key interface {
	~string | ~int | ~int8 | ~int16 | ~int32 | ~int64 | ~uint | ~uint8 | ~uint16 | ~uint32 | ~uint64
}

// appendKey appends the text form of k to dst.
func appendKey[K Key](dst []byte, k K) []byte {
	switch v := any(k).(type) {
	case string:
		return append(dst, v...)
	case int:
		return strconv.AppendInt(dst, int64(v), 10)
	case int64:
		return strconv.AppendInt(dst, v, 10)
	case uint64:
		return strconv.AppendUint(dst, v, 10)
	}
	rv := reflect.ValueOf(k)
	switch {
	case rv.Kind() == reflect.String:
		return append(dst, rv.String()...)
	case rv.CanInt():
		return strconv.AppendInt(dst, rv.Int(), 10)
	default:
		return strconv.AppendUint(dst, rv.Uint(), 10)
	}
}

// parseKey reads back the text form of a key of type K.
func parseKey[K Key](s string) (K, bool) {
	var k K
	rv := reflect.ValueOf(&k).Elem()
	switch {
	case rv.Kind() == reflect.String:
		rv.SetString(s)
	case rv.CanInt():
		n, err := strconv.ParseInt(s, 10, rv.Type().Bits())
		if err != nil {
			return k, false
		}
		rv.SetInt(n)
	default:
		n, err := strconv.ParseUint(s, 10, rv.Type().Bits())
		if err != nil {
			return k, false
		}
		rv.SetUint(n)
	}
	return k, true
}
