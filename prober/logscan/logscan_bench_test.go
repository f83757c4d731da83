package logscan

import (
	"bytes"
	"fmt"
	"testing"
)

// benchLog builds whisker-like log lines, about 1% of them matching
// "failed to stream flows".
func benchLog(size int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < size; i++ {
		if i%100 == 0 {
			fmt.Fprintf(&b, "2026-11-21 23:%02d:%02d.%03d [ERROR][1] whisker-backend/pkg/handlers/v1/flows.go 92: failed to stream flows error=rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp: lookup goldmane.calico-system.svc on 10.96.0.10:53: read udp 10.0.0.7:41234->10.96.0.10:53: i/o timeout\"\n", i/60%60, i%60, i%1000)
			continue
		}
		fmt.Fprintf(&b, "2026-11-21 23:%02d:%02d.%03d [INFO][1] whisker-backend/pkg/handlers/v1/flows.go 85: Received flow batch from goldmane count=%d cluster=default filter={\"namespace\":\"app-%d\"}\n", i/60%60, i%60, i%1000, i%97, i%13)
	}
	return b.Bytes()
}

func BenchmarkLogScanner(b *testing.B) {
	log := benchLog(32 << 20)
	for _, bc := range []struct {
		name     string
		patterns []string
	}{
		{"literal", []string{"failed to stream flows"}},
		{"literal+regexp", []string{"failed to stream flows", `code = Unavailable.*goldmane`}},
		{"regexp_every_line", []string{`(?i)FAILED to stream`}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := New(bc.patterns)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(log)))
			b.ReportAllocs()
			for b.Loop() {
				res, err := s.Scan(bytes.NewReader(log), 0)
				if err != nil || res.Matched == 0 {
					b.Fatalf("%+v %v", res, err)
				}
			}
		})
	}
}
