package mapping

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// The JSON Schemas (draft 2020-12) of the DTOs: envelope.json and one
// <type>.json per DTO type, which references the envelope and describes
// data. docs/events.md is their prose.
//
//go:embed schemas/*.json
var schemaFiles embed.FS

// SchemaBaseURL is the base of every schema's $id: the identifier other
// schemas use to reference them. Nothing is fetched from it.
const SchemaBaseURL = "https://daarion.city/schemas/matrix-bridge/dto/v1/"

// EnvelopeSchema is the file name of the envelope's schema.
const EnvelopeSchema = "envelope.json"

// SchemaFiles returns the schema files: envelope.json and <type>.json for
// every type in Types.
func SchemaFiles() fs.FS {
	sub, err := fs.Sub(schemaFiles, "schemas")
	if err != nil {
		panic(err) // cannot happen: the directory is embedded
	}
	return sub
}

type compiledSchemas struct {
	envelope *jsonschema.Schema
	types    map[string]*jsonschema.Schema
}

// schemas compiles the embedded schemas once.
var schemas = sync.OnceValues(func() (*compiledSchemas, error) {
	files := SchemaFiles()
	names, err := fs.Glob(files, "*.json")
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	for _, name := range names {
		data, err := fs.ReadFile(files, name)
		if err != nil {
			return nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", name, err)
		}
		if err = c.AddResource(SchemaBaseURL+name, doc); err != nil {
			return nil, fmt.Errorf("schema %s: %w", name, err)
		}
	}
	out := &compiledSchemas{types: map[string]*jsonschema.Schema{}}
	for _, name := range names {
		sch, err := c.Compile(SchemaBaseURL + name)
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", name, err)
		}
		if name == EnvelopeSchema {
			out.envelope = sch
		} else {
			out.types[strings.TrimSuffix(path.Base(name), ".json")] = sch
		}
	}
	if out.envelope == nil {
		return nil, fmt.Errorf("schema %s is missing", EnvelopeSchema)
	}
	return out, nil
})

// Validate checks an encoded DTO against the envelope's schema and its
// type's own schema. A DTO whose type has no schema is an error.
func Validate(dtoJSON []byte) error {
	set, err := schemas()
	if err != nil {
		return fmt.Errorf("DTO schemas do not compile: %w", err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(dtoJSON))
	if err != nil {
		return fmt.Errorf("DTO is not valid JSON: %w", err)
	}
	obj, ok := inst.(map[string]any)
	if !ok {
		return errors.New("DTO is not a JSON object")
	}
	typ, _ := obj["type"].(string)
	sch, known := set.types[typ]
	if err = set.envelope.Validate(inst); err != nil {
		if !known {
			return fmt.Errorf("unknown DTO type %q: %w", typ, err)
		}
		return fmt.Errorf("DTO envelope: %w", err)
	}
	if !known {
		return fmt.Errorf("unknown DTO type %q: no schema", typ)
	}
	if err = sch.Validate(inst); err != nil {
		return fmt.Errorf("DTO %s: %w", typ, err)
	}
	return nil
}
