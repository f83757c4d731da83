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
			msgs = append(msgs, fmt.Sprintf("%s:%s: %sunknown key %q", name, m[1], where(line), m[2]))
			continue
		}
		if m := lineReason.FindStringSubmatch(e); m != nil {
			line, _ := strconv.Atoi(m[1])
			msgs = append(msgs, fmt.Sprintf("%s:%s: %s%s", name, m[1], where(line), UserTypes(m[2])))
			continue
		}
		msgs = append(msgs, name+": "+e)
	}
	return errors.New(strings.Join(msgs, "; ")), true
}

// goType is a package-qualified Go type as yaml.v3 names it in "cannot
// unmarshal !!str `x` into config.Duration".
var goType = regexp.MustCompile(`\binto (\[\])?\*?[a-z][a-z0-9]*\.([A-Za-z0-9_]+)`)

// userTypeNames says in the config's own words what a Go type holds.
var userTypeNames = map[string]string{
	"Duration": "a duration like 30s", "Bytes": "a size like 10MiB", "Regexp": "a regular expression",
	"Allowlist": "a list of hosts and networks", "Headers": "a map of header names to values",
	"Secret": "a string", "URL": "a URL", "Namespaces": "a list of namespaces",
}

// UserTypes rewrites Go type names in a yaml.v3 message into what a user
// wrote or should write: errors name keys and values, never a package.
func UserTypes(msg string) string {
	return goType.ReplaceAllStringFunc(msg, func(m string) string {
		sub := goType.FindStringSubmatch(m)
		what, ok := userTypeNames[sub[2]]
		if !ok {
			what = "a mapping"
		}
		if sub[1] != "" {
			return "into a list of " + strings.TrimPrefix(what, "a ")
		}
		return "into " + what
	})
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

// Syntax renders a yaml.v3 parse error ("yaml: line 2: mapping values are
// not allowed in this context") as "file:2: mapping values …", the form
// every other config error has.
func Syntax(err error, name string) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if line, reason, ok := Line(msg); ok {
		return fmt.Errorf("%s:%d: %s", name, line, reason)
	}
	return fmt.Errorf("%s: %s", name, msg)
}
