package metered_test

import (
	"context"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/berth-registry/berth/internal/miniotest"
	"github.com/berth-registry/berth/storage/driver"
	"github.com/berth-registry/berth/storage/driver/drivertest"
	"github.com/berth-registry/berth/storage/driver/filesystem"
	"github.com/berth-registry/berth/storage/driver/metered"
	"github.com/berth-registry/berth/storage/driver/s3"
)

var ctx = context.Background()

// optional are the driver's optional interfaces, each with a check that a
// value implements it. TestOptionalListComplete keeps the list whole.
var optional = map[string]func(any) bool{
	"Writability": func(v any) bool { _, ok := v.(driver.Writability); return ok },
	"Redirector":  func(v any) bool { _, ok := v.(driver.Redirector); return ok },
	"FileStater":  func(v any) bool { _, ok := v.(driver.FileStater); return ok },
}

// TestOptionalListComplete fails when package driver gains an interface
// that the wrapper (and the list above) does not know of.
func TestOptionalListComplete(t *testing.T) {
	files, err := filepath.Glob("../*.go")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if ts, ok := n.(*ast.TypeSpec); ok && ts.Name.IsExported() {
				if _, ok := ts.Type.(*ast.InterfaceType); ok {
					found = append(found, ts.Name.Name)
				}
			}
			return true
		})
	}
	if len(found) < 3 {
		t.Fatalf("found only %v in package driver", found)
	}
	for _, name := range found {
		if name == "Driver" || name == "FileWriter" {
			continue
		}
		if optional[name] == nil {
			t.Errorf("driver.%s is not known to the wrapper: wrapped drivers would lose it", name)
		}
	}
}

type (
	w struct{}
	r struct{}
	f struct{}
)

func (w) Writable() error                                           { return nil }
func (r) RedirectURL(context.Context, string) (string, error)       { return "", nil }
func (f) StatFile(context.Context, string) (driver.FileInfo, error) { return driver.FileInfo{}, nil }

// TestKeepsOptionalInterfaces: a wrapped driver implements exactly the
// optional interfaces of the driver it wraps, for every combination and
// for the real drivers.
func TestKeepsOptionalInterfaces(t *testing.T) {
	drivers := map[string]driver.Driver{
		"none": struct{ driver.Driver }{},
		"w": struct {
			driver.Driver
			w
		}{},
		"r": struct {
			driver.Driver
			r
		}{},
		"f": struct {
			driver.Driver
			f
		}{},
		"wr": struct {
			driver.Driver
			w
			r
		}{},
		"wf": struct {
			driver.Driver
			w
			f
		}{},
		"rf": struct {
			driver.Driver
			r
			f
		}{},
		"wrf": struct {
			driver.Driver
			w
			r
			f
		}{},
		"filesystem": (*filesystem.Driver)(nil),
		"s3":         (*s3.Driver)(nil),
	}
	for name, d := range drivers {
		wrapped := metered.Wrap(d, prometheus.NewRegistry())
		if wrapped == d {
			t.Fatalf("%s: not wrapped", name)
		}
		var has []string
		for iface, implements := range optional {
			if implements(d) {
				has = append(has, iface)
			}
			if implements(d) != implements(wrapped) {
				t.Errorf("%s: implements %s: %v, wrapped: %v", name, iface, implements(d), implements(wrapped))
			}
		}
		slices.Sort(has)
		switch name {
		case "filesystem":
			if !slices.Equal(has, []string{"Writability"}) {
				t.Errorf("filesystem driver has %v: update this test's expectations", has)
			}
		case "s3":
			if !slices.Equal(has, []string{"FileStater", "Redirector"}) {
				t.Errorf("s3 driver has %v: update this test's expectations", has)
			}
		}
	}
}

func TestNilRegistererIsNoWrapper(t *testing.T) {
	d := newFS(t)
	if metered.Wrap(d, nil) != driver.Driver(d) {
		t.Fatal("Wrap with a nil Registerer wrapped the driver")
	}
}

func newFS(t *testing.T) *filesystem.Driver {
	t.Helper()
	d, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestDriverSuite: the wrapper changes no behaviour of the driver.
func TestDriverSuite(t *testing.T) {
	drivertest.Run(t, func(t *testing.T) driver.Driver {
		return metered.Wrap(newFS(t), prometheus.NewRegistry())
	})
}

// TestCounts: calls are timed by operation, failures counted, and
// not-found answers are not failures.
func TestCounts(t *testing.T) {
	reg := prometheus.NewRegistry()
	d := metered.Wrap(newFS(t), reg)
	for range 3 {
		if err := d.PutContent(ctx, "/a/b", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.GetContent(ctx, "/missing"); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("GetContent of a missing file: %v", err)
	}
	if _, err := d.GetContent(ctx, "/../x"); err == nil {
		t.Fatal("GetContent of an invalid path succeeded")
	}
	fw, err := d.Writer(ctx, "/up/data", false)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(fw, "hello")
	if err := fw.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	fw.Close()

	want := map[string]uint64{"put_content": 3, "get_content": 2, "writer": 1, "write_commit": 1, "write_close": 1}
	for op, n := range want {
		if got := histogramCount(t, reg, "berth_storage_operation_duration_seconds", op); got != n {
			t.Errorf("%s calls: %d, want %d", op, got, n)
		}
	}
	if got := counter(t, reg, "berth_storage_operation_errors_total", "get_content"); got != 1 {
		t.Errorf("get_content errors: %v, want 1 (the invalid path; not-found is no error)", got)
	}
	if got := counter(t, reg, "berth_storage_operation_errors_total", "put_content"); got != 0 {
		t.Errorf("put_content errors: %v, want 0", got)
	}
	if n, err := testutil.GatherAndCount(reg, "berth_storage_operation_duration_seconds"); err != nil || n == 0 {
		t.Fatalf("series: %d, %v", n, err)
	}
}

// histogramCount is the sample count of metric name with op="op".
func histogramCount(t *testing.T, reg *prometheus.Registry, name, op string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == op {
				return m.GetHistogram().GetSampleCount()
			}
		}
	}
	return 0
}

// counter is the value of counter name with op="op".
func counter(t *testing.T, reg *prometheus.Registry, name, op string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == op {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s{op=%q}", name, op)
	return 0
}

// TestS3DriverSuite: the wrapper changes nothing on a live S3 driver
// either, and keeps its optional interfaces (skipped without MinIO).
func TestS3DriverSuite(t *testing.T) {
	srv := miniotest.Shared(t)
	drivertest.Run(t, func(t *testing.T) driver.Driver {
		secure := false
		d, err := s3.New(ctx, s3.Options{
			RegionEndpoint: srv.Endpoint, Bucket: srv.NewBucket(t), ForcePathStyle: true,
			AccessKey: miniotest.AccessKey, SecretKey: miniotest.SecretKey,
			RootDirectory: "/registry", Secure: &secure,
		})
		if err != nil {
			t.Fatal(err)
		}
		w := metered.Wrap(d, prometheus.NewRegistry())
		for iface, implements := range optional {
			if implements(d) != implements(w) {
				t.Fatalf("wrapped s3 driver: implements %s: %v, want %v", iface, implements(w), implements(d))
			}
		}
		return w
	})
}
