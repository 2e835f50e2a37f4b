package istio

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/siskin-dev/siskin/functions"
)

var errNotObject = errors.New("not a JSON object")

// decodeMessage decodes one of the Canary's raw Istio fields into its istio.io/api message with
// the message's own (protobuf JSON) decoder, which accepts what Istio accepts, Go durations
// such as "500ms" included. That decoder silently drops unknown fields, and Istio's CRD
// would prune them too, so a misspelt field (say `retryon`) would quietly do nothing: it is
// reported instead, with its path.
func decodeMessage(field string, raw json.RawMessage, msg proto.Message) error {
	var generic any
	if err := json.Unmarshal(raw, &generic); err != nil {
		return fmt.Errorf("%w: %s: %v", functions.ErrInvalid, field, err)
	}
	if _, ok := generic.(map[string]any); !ok {
		return fmt.Errorf("%w: %s: %w", functions.ErrInvalid, field, errNotObject)
	}
	if err := knownFields(field, msg.ProtoReflect().Descriptor(), generic); err != nil {
		return err
	}
	if err := json.Unmarshal(raw, msg); err != nil {
		return fmt.Errorf("%w: %s: %v", functions.ErrInvalid, field, err)
	}
	return nil
}

// knownFields walks a decoded JSON value alongside the message descriptor and reports the first
// key the message has no field for. Values of the wrong type are left to the decoder.
func knownFields(path string, md protoreflect.MessageDescriptor, v any) error {
	if strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
		return nil // well-known types have their own JSON forms (durations, wrappers…)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	fields := md.Fields()
	for _, key := range slices.Sorted(maps.Keys(obj)) {
		val := obj[key]
		fd := fields.ByJSONName(key)
		if fd == nil {
			fd = fields.ByTextName(key)
		}
		if fd == nil {
			return fmt.Errorf("%w: %s: unknown field %q", functions.ErrInvalid, path, key)
		}
		sub := path + "." + key
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() == nil {
				continue
			}
			m, _ := val.(map[string]any)
			for _, k := range slices.Sorted(maps.Keys(m)) {
				if err := knownFields(sub+"."+k, fd.MapValue().Message(), m[k]); err != nil {
					return err
				}
			}
		case fd.Message() == nil:
			continue
		case fd.IsList():
			items, _ := val.([]any)
			for i, item := range items {
				if err := knownFields(fmt.Sprintf("%s[%d]", sub, i), fd.Message(), item); err != nil {
					return err
				}
			}
		default:
			if err := knownFields(sub, fd.Message(), val); err != nil {
				return err
			}
		}
	}
	return nil
}
