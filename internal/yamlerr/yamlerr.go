// Package yamlerr turns yaml.v3 decoding errors into the one-line
// "file:line: reason" form both greybox configs use.
package yamlerr

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

var (
	unknownField = regexp.MustCompile(`line (\d+): field (\S+) not found in type (\S+)`)
	lineReason   = regexp.MustCompile(`^line (\d+): (.*)$`)
)

// TypeErrors rewrites a *yaml.TypeError (strict decoding's unknown keys and
// bad values) as "file:line: reason", joined with "; ". where(line) names
// the enclosing item for the reader, e.g. `module "x": `, and may be nil.
// ok is false when err is not a TypeError.
func TypeErrors(err error, name string, where func(line int) string) (_ error, ok bool) {
	var te *yaml.TypeError
	if !errors.As(err, &te) || len(te.Errors) == 0 {
		return err, false
	}
	if where == nil {
		where = func(int) string { return "" }
	}
	msgs := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		if m := unknownField.FindStringSubmatch(e); m != nil {
			line, _ := strconv.Atoi(m[1])
			msgs = append(msgs, fmt.Sprintf("%s:%s: %sunknown key %q (in %s)", name, m[1], where(line), m[2], m[3]))
			continue
		}
		if m := lineReason.FindStringSubmatch(e); m != nil {
			line, _ := strconv.Atoi(m[1])
			msgs = append(msgs, fmt.Sprintf("%s:%s: %s%s", name, m[1], where(line), m[2]))
			continue
		}
		msgs = append(msgs, name+": "+e)
	}
	return errors.New(strings.Join(msgs, "; ")), true
}

// Line splits yaml.v3's "line N: reason" into its parts.
func Line(msg string) (line int, reason string, ok bool) {
	m := lineReason.FindStringSubmatch(msg)
	if m == nil {
		return 0, msg, false
	}
	line, _ = strconv.Atoi(m[1])
	return line, m[2], true
}
