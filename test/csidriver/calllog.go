package csidriver

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// CallRecord is one line of the JSON call log: one gRPC call to the driver.
type CallRecord struct {
	// Time is when the call arrived (lines are written when it finished).
	Time time.Time `json:"time"`
	// Method is the short gRPC method name, e.g. "CreateVolume".
	Method string `json:"method"`
	// Request is the request message as JSON, with secrets replaced by
	// "***stripped***". Field names are the proto (snake_case) names.
	Request json.RawMessage `json:"request"`
	// Code is the gRPC status code name, e.g. "OK" or "NotFound".
	Code string `json:"code"`
	// Error is the status message; empty on success.
	Error      string  `json:"error"`
	DurationMS float64 `json:"duration_ms"`
}

// ArrivalRecord is one line of the arrival log: a gRPC call as it arrived.
// Its Time equals the Time of the call's CallRecord, written when it ends.
type ArrivalRecord struct {
	Time   time.Time `json:"time"`
	Method string    `json:"method"`
	// Name is the name in the request (CreateVolume, CreateSnapshot), or "".
	Name string `json:"name,omitempty"`
}

// ParseArrivals parses arrival log lines; like ParseCallLog it skips lines
// that are not JSON objects and a last line without newline.
func ParseArrivals(r io.Reader) ([]ArrivalRecord, error) {
	br := bufio.NewReader(r)
	var out []ArrivalRecord
	for lineNo := 1; ; lineNo++ {
		line, err := br.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading arrival log: %w", err)
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var rec ArrivalRecord
		if err := json.Unmarshal(line, &rec); err != nil {
			return nil, fmt.Errorf("arrival log line %d: %w", lineNo, err)
		}
		out = append(out, rec)
	}
}

// strippedSecret is what protosanitizer puts in place of secret fields.
const strippedSecret = "***stripped***"

// csiMethods maps every short CSI method name to its descriptor. CSI method
// names are unique across its services, so the short name is unambiguous.
var csiMethods = func() map[string]protoreflect.MethodDescriptor {
	m := map[string]protoreflect.MethodDescriptor{}
	services := csi.File_csi_proto.Services()
	for i := range services.Len() {
		methods := services.Get(i).Methods()
		for j := range methods.Len() {
			md := methods.Get(j)
			m[string(md.Name())] = md
		}
	}
	return m
}()

// shortMethod turns "/csi.v1.Controller/CreateVolume" into "CreateVolume".
func shortMethod(fullMethod string) string {
	return fullMethod[strings.LastIndexByte(fullMethod, '/')+1:]
}

// NewRequest returns an empty request message of the given CSI method,
// e.g. a *csi.CreateVolumeRequest for "CreateVolume".
func NewRequest(method string) (proto.Message, error) {
	md, ok := csiMethods[method]
	if !ok {
		return nil, fmt.Errorf("unknown CSI method %q", method)
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
	if err != nil {
		return nil, fmt.Errorf("looking up request type of %s: %w", method, err)
	}
	return mt.New().Interface(), nil
}

// DecodeRequest unmarshals the logged request into msg (which must be of the
// method's request type, e.g. *csi.CreateVolumeRequest). Stripped secrets
// are left empty.
func (r CallRecord) DecodeRequest(msg proto.Message) error {
	// Numbers stay as written: as float64, an int64 near 2^63 (a claim of
	// 8Ei) would come back rounded past the int64 range.
	dec := json.NewDecoder(bytes.NewReader(r.Request))
	dec.UseNumber()
	var generic any
	if err := dec.Decode(&generic); err != nil {
		return fmt.Errorf("decoding %s request: %w", r.Method, err)
	}
	cleaned, err := json.Marshal(dropStripped(generic))
	if err != nil {
		return fmt.Errorf("re-encoding %s request: %w", r.Method, err)
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(cleaned, msg); err != nil {
		return fmt.Errorf("decoding %s request into %T: %w", r.Method, msg, err)
	}
	return nil
}

// CSIRequest decodes the logged request into a new message of the type that
// belongs to r.Method.
func (r CallRecord) CSIRequest() (proto.Message, error) {
	msg, err := NewRequest(r.Method)
	if err != nil {
		return nil, err
	}
	if err := r.DecodeRequest(msg); err != nil {
		return nil, err
	}
	return msg, nil
}

// dropStripped removes redacted secrets: they are strings where the message
// has a map, which protojson would reject.
func dropStripped(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, val := range t {
			if s, ok := val.(string); ok && s == strippedSecret {
				delete(t, k)
				continue
			}
			t[k] = dropStripped(val)
		}
	case []any:
		for i := range t {
			t[i] = dropStripped(t[i])
		}
	}
	return v
}

// ReadCallLog parses the call log file written by a driver. See ParseCallLog.
func ReadCallLog(path string) ([]CallRecord, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening call log: %w", err)
	}
	defer f.Close()
	records, err := ParseCallLog(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return records, nil
}

// ParseCallLog parses JSON call log lines. Lines that do not start with '{'
// are skipped so that a log shared with other stderr output still parses,
// and a final line without newline is ignored because the driver may be
// writing it right now.
func ParseCallLog(r io.Reader) ([]CallRecord, error) {
	br := bufio.NewReader(r)
	var records []CallRecord
	for lineNo := 1; ; lineNo++ {
		line, err := br.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			return records, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading call log: %w", err)
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var rec CallRecord
		if err := json.Unmarshal(line, &rec); err != nil {
			return nil, fmt.Errorf("call log line %d: %w", lineNo, err)
		}
		records = append(records, rec)
	}
}

// FilterCalls returns the records of one method, in log order.
func FilterCalls(records []CallRecord, method string) []CallRecord {
	var out []CallRecord
	for _, r := range records {
		if r.Method == method {
			out = append(out, r)
		}
	}
	return out
}
