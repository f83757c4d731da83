package main

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/greybox-probe/greybox/prober"
)

// --timeout-offset takes blackbox_exporter's plain seconds as well as a
// duration; --log.prober a level or none; a bad value names its flag.
func TestFlagValues(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		offset time.Duration
		level  slog.Level
		err    string
	}{
		{nil, 500 * time.Millisecond, slog.LevelWarn, ""},
		{[]string{"--timeout-offset=0.25"}, 250 * time.Millisecond, slog.LevelWarn, ""},
		{[]string{"--timeout-offset=2"}, 2 * time.Second, slog.LevelWarn, ""},
		{[]string{"--timeout-offset=750ms"}, 750 * time.Millisecond, slog.LevelWarn, ""},
		{[]string{"--timeout-offset=soon"}, 0, 0, `--timeout-offset: "soon" is neither seconds`},
		{[]string{"--timeout-offset=-1"}, 0, 0, "--timeout-offset:"},
		{[]string{"--timeout-offset=NaN"}, 0, 0, "--timeout-offset:"},
		{[]string{"--log.prober=error"}, 500 * time.Millisecond, slog.LevelError, ""},
		{[]string{"--log.prober=none"}, 500 * time.Millisecond, prober.LogNone, ""},
		{[]string{"--log.prober=loud"}, 0, 0, `--log.prober: "loud" is not one of`},
	} {
		app := kingpin.New("t", "")
		offset := seconds(app.Flag("timeout-offset", "").Default("0.5"))
		level := proberLevel(app.Flag("log.prober", "").Default("warn"))
		_, err := app.Parse(tc.args)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: error %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || *offset != tc.offset || *level != tc.level {
			t.Errorf("%v: %v %v %v, want %v %v", tc.args, *offset, *level, err, tc.offset, tc.level)
		}
	}
}

func TestWebPaths(t *testing.T) {
	for _, tc := range []struct {
		external, prefix string
		base, route      string
		err              string
	}{
		{"", "", "", "", ""},
		{"http://proxy.example:8080/greybox/", "", "/greybox", "/greybox", ""},
		{"https://proxy.example/greybox", "/", "/greybox", "", ""}, // the proxy strips the path
		{"", "probes/", "", "/probes", ""},
		{"proxy.example/greybox", "", "", "", "--web.external-url: "},
		{"ftp://proxy.example/", "", "", "", "--web.external-url: "},
		{"http://proxy.example/?x=1", "", "", "", "--web.external-url: "},
		{"", "/a?b", "", "", "--web.route-prefix: "},
	} {
		u, route, err := webPaths(tc.external, tc.prefix)
		if tc.err != "" {
			if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
				t.Errorf("%q %q: error %v, want %q", tc.external, tc.prefix, err, tc.err)
			}
			continue
		}
		base := ""
		if u != nil {
			base = u.Path
		}
		if err != nil || base != tc.base || route != tc.route {
			t.Errorf("%q %q: base %q route %q err %v, want %q %q", tc.external, tc.prefix, base, route, err, tc.base, tc.route)
		}
	}
}
