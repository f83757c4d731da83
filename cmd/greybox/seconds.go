package main

import (
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/greybox-probe/greybox/prober"
)

// secondsValue is a duration flag that also takes plain seconds, as
// blackbox_exporter's --timeout-offset does ("0.5"), so its flags carry
// over unchanged.
type secondsValue struct {
	flag string
	d    *time.Duration
}

func (v *secondsValue) Set(s string) error {
	if err := v.set(s); err != nil {
		return fmt.Errorf("--%s: %w", v.flag, err)
	}
	return nil
}

func (v *secondsValue) set(s string) error {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if f < 0 || math.IsNaN(f) || math.IsInf(f, 0) || f > 3600 {
			return fmt.Errorf("%q: want seconds between 0 and 3600", s)
		}
		*v.d = time.Duration(f * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is neither seconds (0.5) nor a duration (500ms)", s)
	}
	if d < 0 {
		return fmt.Errorf("%q: must not be negative", s)
	}
	*v.d = d
	return nil
}

func (v *secondsValue) String() string { return v.d.String() }

func seconds(f *kingpin.FlagClause) *time.Duration {
	v := &secondsValue{flag: f.Model().Name, d: new(time.Duration)}
	f.SetValue(v)
	return v.d
}

// levelValue is --log.prober: a level or none, named in its error.
type levelValue struct {
	flag  string
	level *slog.Level
}

func (v *levelValue) Set(s string) error {
	l, err := prober.ParseProberLevel(s)
	if err != nil {
		return fmt.Errorf("--%s: %w", v.flag, err)
	}
	*v.level = l
	return nil
}

func (v *levelValue) String() string {
	if *v.level == prober.LogNone {
		return "none"
	}
	return strings.ToLower(v.level.String())
}

func proberLevel(f *kingpin.FlagClause) *slog.Level {
	v := &levelValue{flag: f.Model().Name, level: new(slog.Level)}
	f.SetValue(v)
	return v.level
}
