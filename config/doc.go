// Package config loads a service's typed configuration from layers, says
// where every value came from, keeps secrets out of output, and reloads on
// change.
//
// A service declares its configuration as a struct and calls Load:
//
//	type Config struct {
//		Service struct {
//			ListenAddr string        `koanf:"listen_addr" default:":8080" validate:"hostname_port"`
//			Timeout    time.Duration `koanf:"timeout" default:"5s" validate:"min=1s"`
//		} `koanf:"service"`
//		DB struct {
//			URL      string        `koanf:"url" validate:"required,url"`
//			Password config.Secret `koanf:"password" validate:"required"`
//		} `koanf:"db"`
//	}
//
//	cfg, err := config.Load[Config](ctx, config.WithEnvPrefix("CAPTURES"))
//
// # Layers
//
// Each layer overrides the ones before it:
//
//  1. defaults, from `default:"..."` struct tags (the default
//     "${environment}" is the name of the environment being loaded);
//  2. the base file, <dir>/base.{yaml,yml,json,toml};
//  3. the environment's file, <dir>/<env>.{yaml,yml,json,toml}, where env
//     comes from WithEnvironment, else the --env flag, else LOAM_ENV, else
//     "development";
//  4. environment variables, with WithEnvPrefix("CAPTURES"):
//     CAPTURES_SERVICE__LISTEN_ADDR sets service.listen_addr (a double
//     underscore nests, a single one stays inside the key);
//  5. flags set on the command line, with WithFlags: --service.listen_addr=:9090.
//
// Keys are snake_case paths such as telemetry.sampling_ratio, named by
// `koanf:"..."` struct tags. The directory is WithDir, "config" by default.
// Either file may be missing (see Warnings); two files for the same
// environment (base.yaml and base.json) are an error.
//
// # Errors
//
// Loading is strict. A key that T does not have is an error (with a
// suggestion when it looks like a typo), and so is a value of the wrong
// type, a `validate:"..."` tag that fails (validator's tags, plus
// listen_addr: a host:port to listen on, where port 0 picks a free port),
// a secret file that cannot be read, and a file that does not parse. Load collects all of them and
// returns one *Error whose Fields name, for each problem, the key path and
// the source that supplied the bad value, with the line for YAML files and
// syntax errors:
//
//	service.port: 70000 is above the maximum 65535 (set by config/production.yaml:4)
//	servce: is not a known key (did you mean service?) (set by config/base.yaml:1)
//
// # Warnings
//
// Some conditions leave the configuration valid but should not go
// unnoticed. Load, Explain and Watch log them at slog.LevelWarn, with the
// attributes "environment" and "path" (the file concerned), to the logger of
// WithLogger, slog.Default() unless set:
//
//   - an environment named explicitly (WithEnvironment, --env or LOAM_ENV)
//     that has no file while the directory holds a file for another
//     environment: the service runs on the base file and defaults alone,
//     which is what a misspelt environment name or a file missing from a
//     mount looks like. The path is the name looked for, such as
//     config/production.{yaml,yml,json,toml}. The default environment,
//     development, is exempt when no one named it, and so is a directory
//     that holds a base file only;
//   - an environment's file that sets no key (empty, or comments only).
//
// Watch logs the warnings of its first load and of each reload it
// delivers. A file of the running configuration that is deleted or emptied
// while Watch runs is not a warning but a rejected change (see Watch).
//
// # Secrets
//
// A Secret field prints as "[redacted]" everywhere: fmt verbs, JSON, text
// marshalling and slog. Its value is read with Reveal. A configured value
// "file:/run/secrets/db" is read from that file at load time.
//
// # Provenance and reload
//
// Explain lists every effective key with its value (lists and maps in YAML
// flow style, secrets that are set as "[redacted]") and the layer that set
// it ("file config/base.yaml:12", "env CAPTURES_SERVICE__PORT",
// "flag --service.port", "default"). Watch reloads on file changes and
// hands each new valid value to a callback, keeping the last good one when
// a change is invalid or deletes or empties a file the last good one was
// read from. The loam command's "config validate|explain|diff"
// subcommands apply the same engine to a directory, without the service's
// types.
//
// # Sections
//
// This package is the engine: it defines no configuration sections. Each
// Loam package owns the type of its section (telemetry, authn, ...) and the
// service package assembles them into one struct.
//
// # What Loam adds to its libraries
//
// koanf parses YAML, JSON and TOML and merges the layers; mapstructure
// converts values; validator checks `validate` tags; fsnotify watches the
// directory. Loam adds on top: the environment-file convention, strict
// unknown-key detection, the provenance of every key (file and line, env
// var, flag) carried into every error message, all errors at once,
// range-checked integers and durations that require a unit, the Secret
// type with file references, and a debounced watcher that keeps the last
// good value.
package config
