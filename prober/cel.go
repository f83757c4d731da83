package prober

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/google/cel-go/cel"
)

// celProgram is a fail_if_body_json_*_cel expression, compiled at load.
// The body is the variable `body`, decoded JSON, as in blackbox.
type celProgram struct {
	expr string
	prg  cel.Program
}

// celCostLimit bounds one evaluation: CEL's cost is about one unit per
// step, so a comprehension over a large body (or nested over it) stops
// here instead of spending the probe's CPU until the deadline. Measured
// here, 5·10⁵ is about half a second of one core over a decoded JSON list
// (several under the race detector), and leaves room for a check of every
// item of a list of 10,000 objects (about 20 units an item).
const celCostLimit = 500_000

// celEnv is built once, and only when a module uses CEL.
var celEnv = sync.OnceValues(func() (*cel.Env, error) {
	return cel.NewEnv(cel.Variable("body", cel.DynType))
})

func compileCEL(key, expr string) (*celProgram, error) {
	if expr == "" {
		return nil, nil
	}
	env, err := celEnv()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		return nil, fmt.Errorf("%s: %q does not compile: %v", key, expr, iss.Err())
	}
	if t := ast.OutputType(); t != cel.BoolType && t != cel.DynType {
		return nil, fmt.Errorf("%s: %q evaluates to %s, not bool", key, expr, t)
	}
	prg, err := env.Program(ast, cel.CostLimit(celCostLimit), cel.InterruptCheckFrequency(100))
	if err != nil {
		return nil, fmt.Errorf("%s: %q: %v", key, expr, err)
	}
	return &celProgram{expr: expr, prg: prg}, nil
}

// eval runs the program on a decoded body; ctx (the probe's deadline)
// interrupts a long comprehension.
func (c *celProgram) eval(ctx context.Context, body any) (bool, error) {
	out, _, err := c.prg.ContextEval(ctx, map[string]any{"body": body})
	if err != nil {
		return false, err
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("evaluated to %v (%s), not a bool", out.Value(), out.Type().TypeName())
	}
	return b, nil
}

// checkCEL applies both programs to body (JSON); false if the body is not
// JSON, an evaluation fails, or a program says the probe fails.
func checkCEL(ctx context.Context, buf []byte, match, notMatch *celProgram) (bool, error) {
	var body any
	if err := json.Unmarshal(buf, &body); err != nil {
		return false, fmt.Errorf("body is not JSON: %w", err)
	}
	if match != nil {
		m, err := match.eval(ctx, body)
		if err != nil {
			return false, fmt.Errorf("fail_if_body_json_matches_cel %q: %w", match.expr, err)
		}
		if m {
			return false, fmt.Errorf("body matched fail_if_body_json_matches_cel %q", match.expr)
		}
	}
	if notMatch != nil {
		m, err := notMatch.eval(ctx, body)
		if err != nil {
			return false, fmt.Errorf("fail_if_body_json_not_matches_cel %q: %w", notMatch.expr, err)
		}
		if !m {
			return false, errors.New("body did not match fail_if_body_json_not_matches_cel " + fmt.Sprintf("%q", notMatch.expr))
		}
	}
	return true, nil
}
