package sim

import (
	"fmt"
	"strings"
)

// tokenKind classifies what the RouterOS console sees in a command line.
type tokenKind int

const (
	tokEOF      tokenKind = iota
	tokWord               // unquoted run: a path, a keyword, a name or an unquoted value
	tokString             // "double quoted", already unescaped
	tokEq                 // =
	tokTilde              // ~
	tokNeq                // !=
	tokNot                // !
	tokLBracket           // [
	tokRBracket           // ]
	tokLParen             // (
	tokRParen             // )
	tokSemi               // ; or a newline: ends a command
)

type token struct {
	kind tokenKind
	text string
	pos  int // byte offset of the token's first character in the line
}

// cliError is an error RouterOS prints as a line of text: the client must recognise it
// whatever stream and exit status carry it.
type cliError struct{ msg string }

func (e *cliError) Error() string { return e.msg }

func failure(format string, args ...any) error {
	return &cliError{msg: "failure: " + fmt.Sprintf(format, args...)}
}

var errNoSuchItem = &cliError{msg: "no such item"}

func invalidValue(arg string) error {
	return &cliError{msg: "invalid value for argument " + arg}
}

func noMatchingValue(arg string) error {
	return &cliError{msg: "input does not match any value of " + arg}
}

// position turns a byte offset into RouterOS's "(line L column C)", both counted from 1.
func position(line string, pos int) string {
	ln, col := 1, 1
	for i := 0; i < pos && i < len(line); i++ {
		if line[i] == '\n' {
			ln, col = ln+1, 1
			continue
		}
		col++
	}
	return fmt.Sprintf("(line %d column %d)", ln, col)
}

func syntaxError(line string, pos int) error {
	return &cliError{msg: "syntax error " + position(line, pos)}
}

func expectedEnd(line string, pos int) error {
	return &cliError{msg: "expected end of command " + position(line, pos)}
}

func badCommand(line, name string, pos int) error {
	return &cliError{msg: "bad command name " + name + " " + position(line, pos)}
}

// operators are the one-character tokens (a `!` followed by `=` is `!=`).
var operators = map[byte]tokenKind{'=': tokEq, '~': tokTilde, '!': tokNot,
	'[': tokLBracket, ']': tokRBracket, '(': tokLParen, ')': tokRParen}

// wordBreakers end an unquoted word. `$`, `{`, `}` and `\` outside quotes are
// scripting syntax we do not support, so they are syntax errors rather than text:
// a client that forgets to quote a value must fail loudly, not silently run something else.
const wordBreakers = " \t\r\n\"=~[]();!$\\{}"

func lex(line string) ([]token, error) {
	var toks []token
	for i := 0; i < len(line); {
		c := line[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r':
			i++
		case c == '\n' || c == ';':
			toks = append(toks, token{kind: tokSemi, text: string(c), pos: i})
			i++
		case c == '"':
			s, end, err := lexString(line, i)
			if err != nil {
				return nil, err
			}
			toks = append(toks, token{kind: tokString, text: s, pos: i})
			i = end
		case c == '!' && i+1 < len(line) && line[i+1] == '=':
			toks = append(toks, token{kind: tokNeq, text: "!=", pos: i})
			i += 2
		case operators[c] != tokEOF:
			toks = append(toks, token{kind: operators[c], text: string(c), pos: i})
			i++
		case strings.IndexByte(wordBreakers, c) >= 0 || c < 0x20 || c == 0x7f:
			return nil, syntaxError(line, i)
		default:
			start := i
			for i < len(line) && strings.IndexByte(wordBreakers, line[i]) < 0 && line[i] >= 0x20 && line[i] != 0x7f {
				i++
			}
			toks = append(toks, token{kind: tokWord, text: line[start:i], pos: start})
		}
	}
	return append(toks, token{kind: tokEOF, pos: len(line)}), nil
}

// lexString reads a double-quoted string starting at line[start] == '"' and returns its
// value and the offset after the closing quote. Escapes follow the RouterOS manual:
// \" \\ \$ \? \_ (space), \a \b \f \n \r \t \v, and \HH (two hex digits). An unescaped `$`
// would be a variable reference and a raw control character is not something our client
// ever sends, so both are syntax errors here.
func lexString(line string, start int) (string, int, error) {
	var b strings.Builder
	for i := start + 1; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '"':
			return b.String(), i + 1, nil
		case c == '$' || c < 0x20 || c == 0x7f:
			return "", 0, syntaxError(line, i)
		case c == '\\':
			if i+1 >= len(line) {
				return "", 0, syntaxError(line, i)
			}
			i++
			e := line[i]
			switch e {
			case '"', '\\', '$', '?':
				b.WriteByte(e)
			case '_':
				b.WriteByte(' ')
			case 'a':
				b.WriteByte('\a')
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'v':
				b.WriteByte('\v')
			default:
				if i+1 < len(line) && isHex(e) && isHex(line[i+1]) {
					b.WriteByte(hexVal(e)<<4 | hexVal(line[i+1]))
					i++
					continue
				}
				return "", 0, syntaxError(line, i-1)
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, syntaxError(line, len(line))
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

func hexVal(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// quote prints a value the way RouterOS prints quoted strings: the escapes its parser accepts.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\' || c == '$':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, "\\%02X", c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
