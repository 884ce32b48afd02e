package sim

import "strings"

// command is one parsed RouterOS command: a resolved menu path and its arguments.
type command struct {
	path []string // e.g. ["disk","add"], or [":put"]
	menu []string // the menu relative sub-commands ([find …]) resolve against
	pos  int
	args []element
}

func (c *command) name() string { return strings.Join(c.path, " ") }

type elemKind int

const (
	elNamed  elemKind = iota // key=value, key~value, key!=value
	elWord                   // a bare word: a keyword (detail, where, and) or an item name
	elString                 // a quoted positional value
	elSub                    // [ … ]
	elNot                    // !
	elLParen                 // (
	elRParen                 // )
)

type element struct {
	kind elemKind
	key  string    // elNamed
	op   tokenKind // elNamed: tokEq, tokTilde or tokNeq
	val  value     // elNamed: the value; elWord/elString/elSub: the element itself
	pos  int
}

type value struct {
	text   string
	sub    *command
	quoted bool
	pos    int
}

// menuTree is the CLI subset of docs/routeros-cli.md: a leaf is a command.
var menuTree = map[string][]string{
	"":                {"disk", "file", "system"},
	"disk":            {"add", "print", "set", "remove", "find"},
	"file":            {"print", "remove", "copy", "find"},
	"system":          {"resource"},
	"system resource": {"get", "print"},
}

var builtins = map[string]bool{":put": true}

func isMenu(path []string) bool {
	_, ok := menuTree[strings.Join(path, " ")]
	return ok
}

func hasChild(path []string, name string) bool {
	for _, c := range menuTree[strings.Join(path, " ")] {
		if c == name {
			return true
		}
	}
	return false
}

type parser struct {
	line string
	toks []token
	i    int
}

// parseLine splits a command line into commands (`;` and newlines separate them, as on
// the console) and resolves each against the menu tree.
func parseLine(line string) ([]*command, error) {
	toks, err := lex(line)
	if err != nil {
		return nil, err
	}
	p := &parser{line: line, toks: toks}
	var cmds []*command
	for {
		for p.peek().kind == tokSemi {
			p.i++
		}
		if p.peek().kind == tokEOF {
			return cmds, nil
		}
		c, err := p.command(nil, false)
		if err != nil {
			return nil, err
		}
		if c != nil {
			cmds = append(cmds, c)
		}
	}
}

func (p *parser) peek() token        { return p.toks[p.i] }
func (p *parser) peekAt(n int) token { return p.toks[min(p.i+n, len(p.toks)-1)] }
func (p *parser) next() token        { t := p.toks[p.i]; p.i++; return t }

func (p *parser) atEnd(inSub bool) bool {
	switch p.peek().kind {
	case tokEOF, tokSemi:
		return true
	case tokRBracket:
		return inSub
	}
	return false
}

// command parses one command. base is the menu relative paths start from. It returns nil
// for a line that only names a menu (on a console that changes the current menu; over exec
// it does nothing).
func (p *parser) command(base []string, inSub bool) (*command, error) {
	first := p.peek()
	path := append([]string(nil), base...)
	if first.kind != tokWord {
		return nil, syntaxError(p.line, first.pos)
	}
	if strings.HasPrefix(first.text, ":") {
		p.next()
		if !builtins[first.text] {
			return nil, badCommand(p.line, strings.TrimPrefix(first.text, ":"), first.pos+1)
		}
		c := &command{path: []string{first.text}, menu: base, pos: first.pos}
		return c, p.args(c, inSub)
	}
	if strings.HasPrefix(first.text, "/") {
		p.next()
		path = nil
		off := first.pos + 1
		for _, seg := range strings.Split(first.text[1:], "/") {
			if seg != "" {
				if !isMenu(path) || !hasChild(path, seg) {
					return nil, badCommand(p.line, seg, off)
				}
				path = append(path, seg)
			}
			off += len(seg) + 1
		}
	}
	for isMenu(path) && p.peek().kind == tokWord {
		t := p.peek()
		if !hasChild(path, t.text) {
			return nil, badCommand(p.line, t.text, t.pos)
		}
		p.next()
		path = append(path, t.text)
	}
	if isMenu(path) {
		if p.atEnd(inSub) {
			return nil, nil
		}
		return nil, expectedEnd(p.line, p.peek().pos)
	}
	c := &command{path: path, menu: path[:len(path)-1], pos: first.pos}
	return c, p.args(c, inSub)
}

func (p *parser) args(c *command, inSub bool) error {
	for !p.atEnd(inSub) {
		t := p.peek()
		switch t.kind {
		case tokWord:
			p.next()
			op := p.peek()
			if op.kind != tokEq && op.kind != tokTilde && op.kind != tokNeq {
				c.args = append(c.args, element{kind: elWord, val: value{text: t.text, pos: t.pos}, pos: t.pos})
				continue
			}
			if op.pos != t.pos+len(t.text) {
				return syntaxError(p.line, op.pos)
			}
			p.next()
			v, err := p.value(c.menu, op.pos+len(op.text))
			if err != nil {
				return err
			}
			c.args = append(c.args, element{kind: elNamed, key: t.text, op: op.kind, val: v, pos: t.pos})
		case tokString:
			p.next()
			c.args = append(c.args, element{kind: elString, val: value{text: t.text, quoted: true, pos: t.pos}, pos: t.pos})
		case tokLBracket:
			v, err := p.sub(c.menu)
			if err != nil {
				return err
			}
			c.args = append(c.args, element{kind: elSub, val: v, pos: t.pos})
		case tokNot:
			p.next()
			c.args = append(c.args, element{kind: elNot, pos: t.pos})
		case tokLParen:
			p.next()
			c.args = append(c.args, element{kind: elLParen, pos: t.pos})
		case tokRParen:
			p.next()
			c.args = append(c.args, element{kind: elRParen, pos: t.pos})
		default:
			return syntaxError(p.line, t.pos)
		}
	}
	return nil
}

// value parses what follows `=`: it must start right at the operator (no space), like
// RouterOS, which reads `key= x` as an empty value followed by a stray word.
func (p *parser) value(menu []string, want int) (value, error) {
	t := p.peek()
	if t.pos != want {
		return value{}, syntaxError(p.line, want)
	}
	switch t.kind {
	case tokWord:
		p.next()
		return value{text: t.text, pos: t.pos}, nil
	case tokString:
		p.next()
		return value{text: t.text, quoted: true, pos: t.pos}, nil
	case tokLBracket:
		return p.sub(menu)
	}
	return value{}, syntaxError(p.line, t.pos)
}

func (p *parser) sub(menu []string) (value, error) {
	open := p.next()
	if p.peek().kind == tokRBracket {
		return value{}, syntaxError(p.line, p.peek().pos)
	}
	c, err := p.command(menu, true)
	if err != nil {
		return value{}, err
	}
	if p.peek().kind != tokRBracket {
		return value{}, syntaxError(p.line, p.peek().pos)
	}
	p.next()
	if c == nil {
		return value{}, syntaxError(p.line, open.pos)
	}
	return value{sub: c, pos: open.pos}, nil
}
