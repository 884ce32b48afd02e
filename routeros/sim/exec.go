package sim

import (
	"context"
	"strconv"
	"strings"
)

// result is what a command produces: printed output, a value for `:put` and `[ … ]`, or
// the item references `find` returns.
type result struct {
	out    string
	ret    string
	refs   []string
	isRefs bool
	// after runs once the state lock is released (a synchronous file copy waits there).
	after func() error
}

type execEnv struct {
	ctx   context.Context
	line  string
	width int
}

type handler func(s *Sim, env *execEnv, c *command) (result, error)

var handlers map[string]handler

func init() {
	handlers = map[string]handler{
		"disk add":              (*Sim).diskAdd,
		"disk print":            (*Sim).diskPrint,
		"disk set":              (*Sim).diskSet,
		"disk remove":           (*Sim).diskRemove,
		"disk find":             (*Sim).diskFind,
		"file print":            (*Sim).filePrint,
		"file remove":           (*Sim).fileRemove,
		"file copy":             (*Sim).fileCopy,
		"file find":             (*Sim).fileFind,
		"system resource get":   (*Sim).resourceGet,
		"system resource print": (*Sim).resourcePrint,
		":put":                  (*Sim).put,
	}
}

// execLine parses and runs a command line. Commands run one after another under the state
// lock, so each is atomic like on the router; an error stops the line.
func (s *Sim) execLine(ctx context.Context, line string, width int) (string, error) {
	cmds, err := parseLine(line)
	if err != nil {
		return "", err
	}
	env := &execEnv{ctx: ctx, line: line, width: width}
	var out strings.Builder
	for _, c := range cmds {
		s.mu.Lock()
		r, err := s.run(env, c)
		if diskChanging[c.name()] {
			if serr := s.save(); serr != nil && err == nil {
				err = failure("%v", serr)
			}
		}
		s.mu.Unlock()
		if err == nil && r.after != nil {
			err = r.after()
		}
		out.WriteString(r.out)
		if err != nil {
			return out.String(), err
		}
	}
	return out.String(), nil
}

func (s *Sim) run(env *execEnv, c *command) (result, error) {
	h := handlers[c.name()]
	if h == nil {
		return result{}, badCommand(env.line, c.path[len(c.path)-1], c.pos)
	}
	return h(s, env, c)
}

// eval gives a value's text, running a `[ … ]` sub-command for it.
func (s *Sim) eval(env *execEnv, v value) (result, error) {
	if v.sub == nil {
		return result{ret: v.text}, nil
	}
	return s.run(env, v.sub)
}

func (s *Sim) put(env *execEnv, c *command) (result, error) {
	if len(c.args) == 0 {
		return result{out: "\n"}, nil
	}
	if len(c.args) > 1 {
		return result{}, expectedEnd(env.line, c.args[1].pos)
	}
	a := c.args[0]
	if a.kind == elNamed || a.kind == elNot || a.kind == elLParen || a.kind == elRParen {
		return result{}, syntaxError(env.line, a.pos)
	}
	r, err := s.eval(env, a.val)
	if err != nil {
		return result{}, err
	}
	if r.isRefs {
		return result{out: strings.Join(r.refs, ";") + "\n"}, nil
	}
	return result{out: r.ret + "\n"}, nil
}

func (s *Sim) resourceGet(env *execEnv, c *command) (result, error) {
	if len(c.args) != 1 || c.args[0].kind != elWord {
		if len(c.args) == 0 {
			return result{}, syntaxError(env.line, len(env.line))
		}
		return result{}, expectedEnd(env.line, c.args[min(1, len(c.args)-1)].pos)
	}
	switch c.args[0].val.text {
	case "version":
		return result{ret: s.opts.Version + " (stable)"}, nil
	case "board-name":
		return result{ret: "RDS2216"}, nil
	case "platform":
		return result{ret: "MikroTik"}, nil
	}
	return result{}, noMatchingValue("value-name")
}

func (s *Sim) resourcePrint(env *execEnv, c *command) (result, error) {
	if len(c.args) > 0 {
		return result{}, expectedEnd(env.line, c.args[0].pos)
	}
	return result{out: "             version: " + s.opts.Version + " (stable)\n" +
		"          board-name: RDS2216\n" +
		"            platform: MikroTik\n"}, nil
}

// namedArgs checks that every argument is key=value with a key the command knows, the way
// RouterOS does: an unknown key is "expected end of command" at that key.
func namedArgs(env *execEnv, els []element, known map[string]bool) (map[string]element, error) {
	args := make(map[string]element, len(els))
	for _, el := range els {
		if el.kind != elNamed || !known[el.key] {
			return nil, expectedEnd(env.line, el.pos)
		}
		if el.op != tokEq {
			return nil, syntaxError(env.line, el.pos+len(el.key))
		}
		args[el.key] = el
	}
	return args, nil
}

// printArgs reads `[detail] [where …]` and returns the where-expression's elements.
func printArgs(env *execEnv, els []element) ([]element, error) {
	for i, el := range els {
		if el.kind != elWord {
			return nil, expectedEnd(env.line, el.pos)
		}
		switch el.val.text {
		case "detail", "without-paging":
		case "where":
			if i == len(els)-1 {
				return nil, syntaxError(env.line, el.pos+len("where"))
			}
			return els[i+1:], nil
		default:
			return nil, expectedEnd(env.line, el.pos)
		}
	}
	return nil, nil
}

// itemRefs resolves the item argument of set/remove: `[find …]`, or names and numbers
// separated by commas. nameKey is the property that names an item in this menu.
func (s *Sim) itemRefs(env *execEnv, el element, items []*item, nameKey string) ([]*item, error) {
	switch el.kind {
	case elSub:
		r, err := s.run(env, el.val.sub)
		if err != nil {
			return nil, err
		}
		if !r.isRefs {
			return nil, invalidValue("numbers")
		}
		var out []*item
		for _, ref := range r.refs {
			for _, it := range items {
				if it.ref == ref {
					out = append(out, it)
				}
			}
		}
		return out, nil
	case elWord, elString:
		var out []*item
		for _, name := range strings.Split(el.val.text, ",") {
			found := false
			n, numErr := strconv.Atoi(name)
			for _, it := range items {
				v, _ := it.get(nameKey)
				if v == name || numErr == nil && !el.val.quoted && it.index == n {
					out = append(out, it)
					found = true
					break
				}
			}
			if !found {
				return nil, errNoSuchItem
			}
		}
		return out, nil
	}
	return nil, syntaxError(env.line, el.pos)
}

func refsOf(items []*item) result {
	r := result{isRefs: true}
	for _, it := range items {
		r.refs = append(r.refs, it.ref)
	}
	return r
}

// findArgs strips an optional leading `where` from find's arguments.
func findArgs(els []element) []element {
	if len(els) > 0 && els[0].kind == elWord && els[0].val.text == "where" {
		return els[1:]
	}
	return els
}

func filterItems(items []*item, e expr) []*item {
	var out []*item
	for _, it := range items {
		if e.match(it) {
			out = append(out, it)
		}
	}
	return out
}

func commandEnd(env *execEnv, c *command) int {
	if len(c.args) == 0 {
		return len(env.line)
	}
	last := c.args[len(c.args)-1]
	return last.val.pos + len(last.val.text)
}
