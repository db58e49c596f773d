package config

import (
	"errors"
	"fmt"
	"net"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/go-playground/validator/v10"
)

// validatorOnce builds the validator shared by every load; it is safe for
// concurrent use and caches struct metadata.
var validatorOnce = sync.OnceValue(func() *validator.Validate {
	v := validator.New(validator.WithRequiredStructEnabled())
	v.RegisterCustomTypeFunc(func(v reflect.Value) any { return v.Interface().(Secret).Reveal() }, Secret{})
	// listen_addr is an address to listen on: host:port where the host may
	// be empty (every interface) and port 0 asks for a free port.
	_ = v.RegisterValidation("listen_addr", func(fl validator.FieldLevel) bool {
		_, port, err := net.SplitHostPort(fl.Field().String())
		if err != nil {
			return false
		}
		n, err := strconv.ParseUint(port, 10, 16)
		return err == nil && n <= 65535
	})
	return v
})

// validate checks the `validate` tags of root, skipping paths that already
// failed to decode.
func (st *state) validate(root reflect.Value, sc *schema) {
	err := validatorOnce().Struct(root.Addr().Interface())
	var errs validator.ValidationErrors
	if !errors.As(err, &errs) {
		if err != nil {
			st.fail("", Source{}, err.Error())
		}
		return
	}
	for _, fe := range errs {
		path, n := sc.keyPath(fe.StructNamespace())
		if st.failed[path] {
			continue
		}
		src := st.sourceOf(path)
		st.fail(path, src, validationMsg(fe, n != nil && n.secret, src.Kind != SourceUnset))
	}
}

// keyPath turns a validator namespace of Go field names ("Config.Service.Port",
// "Config.Hosts[1]") into a key path ("service.port", "hosts[1]") and its node.
func (sc *schema) keyPath(ns string) (string, *node) {
	_, ns, _ = strings.Cut(ns, ".") // drop the root type name
	segs := strings.Split(ns, ".")
	for i := len(segs); i > 0; i-- {
		base, index, _ := strings.Cut(segs[i-1], "[")
		n, ok := sc.byGo[strings.Join(append(slices.Clone(segs[:i-1]), base), ".")]
		if !ok {
			continue
		}
		path := n.path
		if index != "" {
			path += "[" + index
		}
		for _, s := range segs[i:] {
			path += "." + strings.ToLower(s)
		}
		return path, n
	}
	return strings.ToLower(ns), nil
}

// validationMsg says what a failed validation tag means.
func validationMsg(fe validator.FieldError, secret, set bool) string {
	val, param := show(fe.Value(), secret), fe.Param()
	length := false
	switch fe.Kind() {
	case reflect.String, reflect.Slice, reflect.Map, reflect.Array:
		length = true
	}
	unit := "characters"
	if fe.Kind() != reflect.String {
		unit = "items"
	}
	switch fe.Tag() {
	case "required":
		if set {
			return "is required but set to an empty value"
		}
		return "is required but not set"
	case "min", "gte":
		if length {
			return fmt.Sprintf("is shorter than the minimum of %s %s", param, unit)
		}
		return fmt.Sprintf("%s is below the minimum %s", val, param)
	case "max", "lte":
		if length {
			return fmt.Sprintf("is longer than the maximum of %s %s", param, unit)
		}
		return fmt.Sprintf("%s is above the maximum %s", val, param)
	case "gt":
		return fmt.Sprintf("%s must be greater than %s", val, param)
	case "lt":
		return fmt.Sprintf("%s must be less than %s", val, param)
	case "oneof":
		return fmt.Sprintf("%s is not one of %s", val, strings.Join(strings.Fields(param), ", "))
	case "url", "http_url", "uri":
		return fmt.Sprintf("%s is not a valid URL", val)
	case "hostname_port":
		return fmt.Sprintf("%s is not a host:port", val)
	case "listen_addr":
		return fmt.Sprintf("%s is not an address to listen on, host:port (the host may be empty, port 0 picks a free port)", val)
	case "hostname", "hostname_rfc1123", "fqdn":
		return fmt.Sprintf("%s is not a valid host name", val)
	}
	if param != "" {
		return fmt.Sprintf("%s fails the %s=%s check", val, fe.Tag(), param)
	}
	return fmt.Sprintf("%s fails the %s check", val, fe.Tag())
}
