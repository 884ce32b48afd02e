package sim

import (
	"regexp"
)

// expr is a parsed `where` (or `find`) condition, evaluated against an item's properties
// as RouterOS sees them unformatted: strings unquoted, integers without grouping.
type expr interface {
	match(it *item) bool
}

type exprAll struct{}

func (exprAll) match(*item) bool { return true }

type exprCompare struct {
	key string
	op  tokenKind
	val string
	re  *regexp.Regexp
}

func (e *exprCompare) match(it *item) bool {
	v, ok := it.get(e.key)
	switch e.op {
	case tokEq:
		return ok && v == e.val
	case tokNeq:
		return !ok || v != e.val
	default: // tokTilde
		return ok && e.re.MatchString(v)
	}
}

type exprNot struct{ x expr }

func (e exprNot) match(it *item) bool { return !e.x.match(it) }

type exprAnd struct{ a, b expr }

func (e exprAnd) match(it *item) bool { return e.a.match(it) && e.b.match(it) }

type exprOr struct{ a, b expr }

func (e exprOr) match(it *item) bool { return e.a.match(it) || e.b.match(it) }

// whereParser reads `=`, `!=`, `~` (Go regexp, close enough to the POSIX regex RouterOS
// uses for the anchors and classes our client sends), `and`, `or`, `!` and parentheses.
// Juxtaposed conditions mean `and`, as on the console.
type whereParser struct {
	line string
	els  []element
	i    int
	keys map[string]bool
	end  int // position just past the command, for errors at its end
}

func parseWhere(line string, els []element, keys map[string]bool, end int) (expr, error) {
	if len(els) == 0 {
		return exprAll{}, nil
	}
	p := &whereParser{line: line, els: els, keys: keys, end: end}
	e, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.i < len(p.els) {
		return nil, expectedEnd(line, p.els[p.i].pos)
	}
	return e, nil
}

func (p *whereParser) peekWord(w string) bool {
	return p.i < len(p.els) && p.els[p.i].kind == elWord && p.els[p.i].val.text == w
}

func (p *whereParser) or() (expr, error) {
	e, err := p.and()
	if err != nil {
		return nil, err
	}
	for p.peekWord("or") {
		p.i++
		r, err := p.and()
		if err != nil {
			return nil, err
		}
		e = exprOr{e, r}
	}
	return e, nil
}

func (p *whereParser) and() (expr, error) {
	e, err := p.unary()
	if err != nil {
		return nil, err
	}
	for p.i < len(p.els) && !p.peekWord("or") && p.els[p.i].kind != elRParen {
		if p.peekWord("and") {
			p.i++
		}
		r, err := p.unary()
		if err != nil {
			return nil, err
		}
		e = exprAnd{e, r}
	}
	return e, nil
}

func (p *whereParser) unary() (expr, error) {
	if p.i >= len(p.els) {
		return nil, syntaxError(p.line, p.end)
	}
	el := p.els[p.i]
	p.i++
	switch el.kind {
	case elNot:
		x, err := p.unary()
		if err != nil {
			return nil, err
		}
		return exprNot{x}, nil
	case elLParen:
		x, err := p.or()
		if err != nil {
			return nil, err
		}
		if p.i >= len(p.els) || p.els[p.i].kind != elRParen {
			return nil, syntaxError(p.line, p.end)
		}
		p.i++
		return x, nil
	case elNamed:
		if !p.keys[el.key] {
			return nil, expectedEnd(p.line, el.pos)
		}
		if el.val.sub != nil {
			return nil, invalidValue(el.key)
		}
		c := &exprCompare{key: el.key, op: el.op, val: el.val.text}
		if el.op == tokTilde {
			re, err := regexp.Compile(el.val.text)
			if err != nil {
				return nil, invalidValue(el.key)
			}
			c.re = re
		}
		return c, nil
	}
	return nil, expectedEnd(p.line, el.pos)
}
