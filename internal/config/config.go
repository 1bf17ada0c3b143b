// Package config loads the YAML configuration files of both programs: strict
// keys (an unknown key is an error that names it) and environment overrides in
// the style of CNCF Distribution (REGISTRY_HTTP_ADDR sets http.addr).
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load fills cfg, a pointer to a struct whose fields carry yaml tags. It first
// decodes the file at path (skipped when path is empty), rejecting keys that
// cfg does not have, then applies overrides from the environment: a variable
// named PREFIX_KEY_SUBKEY (upper case, path joined by "_") replaces that key,
// its value parsed as YAML so lists and numbers work, with unknown keys
// rejected as in the file. Variables with the
// prefix that name no key are ignored: orchestrators inject such names
// (Kubernetes sets REGISTRY_PORT for a service called "registry").
func Load(path, prefix string, cfg any) error {
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		if err := Decode(data, cfg); err != nil {
			return fmt.Errorf("config %s: %w", path, err)
		}
	}
	return ApplyEnv(prefix, cfg, os.Environ())
}

// Decode parses YAML into cfg, rejecting unknown keys. An empty document
// leaves cfg as it is.
func Decode(data []byte, cfg any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// ApplyEnv applies the overrides found in environ (KEY=VALUE entries) to cfg.
func ApplyEnv(prefix string, cfg any, environ []string) error {
	v := reflect.ValueOf(cfg)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return errors.New("config: ApplyEnv needs a pointer to a struct")
	}
	env := make(map[string]string)
	for _, kv := range environ {
		k, val, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(k, prefix+"_") {
			env[k] = val
		}
	}
	if len(env) == 0 {
		return nil
	}
	return applyEnv(prefix, v.Elem(), env)
}

func applyEnv(name string, v reflect.Value, env map[string]string) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if tag == "-" {
			continue
		}
		if tag == "" {
			tag = strings.ToLower(f.Name)
		}
		key := name + "_" + strings.ToUpper(tag)
		fv := v.Field(i)
		if val, ok := env[key]; ok {
			// As strict as the file: a mistyped key inside a value (a
			// list of rules) is an error, not a setting silently lost.
			if err := Decode([]byte(val), fv.Addr().Interface()); err != nil {
				return fmt.Errorf("config: environment variable %s: %w", key, err)
			}
			continue
		}
		if fv.Kind() == reflect.Struct {
			if err := applyEnv(key, fv, env); err != nil {
				return err
			}
		}
	}
	return nil
}
