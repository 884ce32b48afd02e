package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// This file reads kubeconfig files without a YAML library (the binary carries no dependency
// beyond the allowed list). Kubeconfigs use a small, regular part of YAML: block mappings and
// sequences, flow mappings and sequences ({a: b}, [a, b]), plain and quoted scalars and
// comments. parseYAMLSubset handles exactly that and reports anything else as an error
// rather than guessing. JSON (a YAML subset) is read with encoding/json.

type yamlLine struct {
	indent int
	text   string
	num    int
}

func parseYAMLSubset(src string) (any, error) {
	if t := strings.TrimSpace(src); strings.HasPrefix(t, "{") {
		var v any
		if err := json.Unmarshal([]byte(t), &v); err != nil {
			return nil, fmt.Errorf("JSON kubeconfig: %w", err)
		}
		return v, nil
	}
	var lines []yamlLine
	for i, raw := range strings.Split(strings.ReplaceAll(src, "\r\n", "\n"), "\n") {
		text := stripComment(strings.TrimRight(raw, " \t"))
		trimmed := strings.TrimLeft(text, " ")
		if trimmed == "" || trimmed == "---" || strings.HasPrefix(trimmed, "%") {
			continue
		}
		if strings.HasPrefix(trimmed, "\t") {
			return nil, fmt.Errorf("line %d: tab indentation is not YAML", i+1)
		}
		lines = append(lines, yamlLine{indent: len(text) - len(trimmed), text: trimmed, num: i + 1})
	}
	if len(lines) == 0 {
		return map[string]any{}, nil
	}
	p := &yamlParser{lines: lines}
	v, err := p.block(lines[0].indent)
	if err != nil {
		return nil, err
	}
	if p.pos < len(p.lines) {
		return nil, fmt.Errorf("line %d: unexpected indentation", p.lines[p.pos].num)
	}
	return v, nil
}

// stripComment removes a " #" comment outside quotes.
func stripComment(s string) string {
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == '\\' && quote == '"' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '#' && (i == 0 || s[i-1] == ' '):
			return strings.TrimRight(s[:i], " ")
		}
	}
	return s
}

type yamlParser struct {
	lines []yamlLine
	pos   int
}

// block parses the mapping or sequence whose lines sit at exactly indent.
func (p *yamlParser) block(indent int) (any, error) {
	if strings.HasPrefix(p.lines[p.pos].text, "- ") || p.lines[p.pos].text == "-" {
		return p.sequence(indent)
	}
	return p.mapping(indent)
}

func (p *yamlParser) sequence(indent int) (any, error) {
	var out []any
	for p.pos < len(p.lines) {
		l := p.lines[p.pos]
		isItem := strings.HasPrefix(l.text, "- ") || l.text == "-"
		if l.indent < indent || l.indent == indent && !isItem {
			break // a sequence may sit at its parent key's indentation
		}
		if l.indent > indent {
			return nil, fmt.Errorf("line %d: expected a sequence item", l.num)
		}
		rest := strings.TrimLeft(strings.TrimPrefix(l.text, "-"), " ")
		itemIndent := l.indent + (len(l.text) - len(rest))
		switch {
		case rest == "":
			p.pos++
			if p.pos >= len(p.lines) || p.lines[p.pos].indent <= indent {
				out = append(out, nil)
				continue
			}
			v, err := p.block(p.lines[p.pos].indent)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		case isMappingEntry(rest):
			// "- key: value" starts a mapping whose further keys align with "key".
			p.lines[p.pos] = yamlLine{indent: itemIndent, text: rest, num: l.num}
			v, err := p.mapping(itemIndent)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		default:
			v, err := parseFlowValue(rest, l.num)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
			p.pos++
		}
	}
	return out, nil
}

func (p *yamlParser) mapping(indent int) (any, error) {
	out := map[string]any{}
	for p.pos < len(p.lines) {
		l := p.lines[p.pos]
		if l.indent < indent {
			break
		}
		if l.indent > indent {
			return nil, fmt.Errorf("line %d: unexpected indentation", l.num)
		}
		key, rest, ok := splitMappingEntry(l.text)
		if !ok {
			return nil, fmt.Errorf("line %d: expected \"key: value\"", l.num)
		}
		p.pos++
		if rest != "" {
			v, err := parseFlowValue(rest, l.num)
			if err != nil {
				return nil, err
			}
			out[key] = v
			continue
		}
		// Value on the following, more indented lines (a sequence may sit at the same indent).
		if p.pos < len(p.lines) && (p.lines[p.pos].indent > indent ||
			p.lines[p.pos].indent == indent && strings.HasPrefix(p.lines[p.pos].text, "- ")) {
			v, err := p.block(p.lines[p.pos].indent)
			if err != nil {
				return nil, err
			}
			out[key] = v
			continue
		}
		out[key] = nil
	}
	return out, nil
}

func isMappingEntry(s string) bool {
	_, _, ok := splitMappingEntry(s)
	return ok && !strings.HasPrefix(s, "{") && !strings.HasPrefix(s, "[")
}

// splitMappingEntry splits "key: value" (key plain or quoted) at the first ": " outside quotes.
func splitMappingEntry(s string) (key, rest string, ok bool) {
	if s == "" || s[0] == '{' || s[0] == '[' {
		return "", "", false
	}
	if s[0] == '"' || s[0] == '\'' {
		k, n, err := parseQuoted(s)
		if err != nil || n >= len(s) || s[n] != ':' {
			return "", "", false
		}
		return k, strings.TrimSpace(s[n+1:]), true
	}
	i := strings.Index(s, ": ")
	if i < 0 {
		if strings.HasSuffix(s, ":") {
			return strings.TrimSpace(s[:len(s)-1]), "", true
		}
		return "", "", false
	}
	return strings.TrimSpace(s[:i]), strings.TrimSpace(s[i+2:]), true
}

// parseFlowValue parses a scalar, {flow mapping} or [flow sequence] that must fill s.
func parseFlowValue(s string, line int) (any, error) {
	fp := &flowParser{s: s}
	v, err := fp.value()
	if err == nil {
		fp.skipSpace()
		if fp.i != len(fp.s) {
			err = fmt.Errorf("unexpected %q", fp.s[fp.i:])
		}
	}
	if err != nil {
		return nil, fmt.Errorf("line %d: %w", line, err)
	}
	return v, nil
}

type flowParser struct {
	s string
	i int
}

func (f *flowParser) skipSpace() {
	for f.i < len(f.s) && f.s[f.i] == ' ' {
		f.i++
	}
}

func (f *flowParser) value() (any, error) {
	f.skipSpace()
	if f.i >= len(f.s) {
		return nil, nil
	}
	switch f.s[f.i] {
	case '{':
		return f.collection('}', true)
	case '[':
		return f.collection(']', false)
	case '"', '\'':
		v, n, err := parseQuoted(f.s[f.i:])
		f.i += n
		return v, err
	}
	start := f.i
	inFlow := strings.ContainsAny(f.s[:start], "{[")
	for f.i < len(f.s) {
		c := f.s[f.i]
		if inFlow && (c == ',' || c == '}' || c == ']') || inFlow && c == ':' && f.i+1 < len(f.s) && f.s[f.i+1] == ' ' {
			break
		}
		f.i++
	}
	return plainScalar(strings.TrimSpace(f.s[start:f.i])), nil
}

func (f *flowParser) collection(end byte, isMap bool) (any, error) {
	f.i++ // opening bracket
	m := map[string]any{}
	var list []any
	for {
		f.skipSpace()
		if f.i >= len(f.s) {
			return nil, errors.New("unterminated flow collection")
		}
		if f.s[f.i] == end {
			f.i++
			if isMap {
				return m, nil
			}
			return list, nil
		}
		v, err := f.value()
		if err != nil {
			return nil, err
		}
		f.skipSpace()
		if isMap {
			if f.i >= len(f.s) || f.s[f.i] != ':' {
				return nil, errors.New("flow mapping entry without ':'")
			}
			f.i++
			val, err := f.value()
			if err != nil {
				return nil, err
			}
			m[fmt.Sprint(v)] = val
		} else {
			list = append(list, v)
		}
		f.skipSpace()
		if f.i < len(f.s) && f.s[f.i] == ',' {
			f.i++
		}
	}
}

// parseQuoted reads a single- or double-quoted scalar at the start of s and returns it and
// the number of bytes consumed.
func parseQuoted(s string) (string, int, error) {
	q := s[0]
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case q == '\'' && c == '\'' && i+1 < len(s) && s[i+1] == '\'':
			b.WriteByte('\'')
			i++
		case c == q:
			return b.String(), i + 1, nil
		case q == '"' && c == '\\' && i+1 < len(s):
			i++
			switch s[i] {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			default:
				b.WriteByte(s[i])
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", len(s), errors.New("unterminated quoted string")
}

func plainScalar(s string) any {
	switch s {
	case "", "~", "null":
		return nil
	case "true":
		return true
	case "false":
		return false
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n
	}
	return s
}

// kubeconfig holds what the API reader needs from a kubeconfig's current context.
type kubeconfig struct {
	Server                         string
	CAData, CAFile                 string
	Token, TokenFile               string
	ClientCertData, ClientCertFile string
	ClientKeyData, ClientKeyFile   string
	InsecureSkipTLSVerify          bool
}

func parseKubeconfig(src string) (*kubeconfig, error) {
	doc, err := parseYAMLSubset(src)
	if err != nil {
		return nil, err
	}
	root, _ := doc.(map[string]any)
	ctxName, _ := root["current-context"].(string)
	if ctxName == "" {
		return nil, errors.New("kubeconfig has no current-context")
	}
	named := func(list, name, field string) (map[string]any, error) {
		items, _ := root[list].([]any)
		for _, it := range items {
			m, _ := it.(map[string]any)
			if n, _ := m["name"].(string); n == name {
				inner, _ := m[field].(map[string]any)
				if inner == nil {
					inner = map[string]any{}
				}
				return inner, nil
			}
		}
		return nil, fmt.Errorf("kubeconfig: %s %q not found", strings.TrimSuffix(list, "s"), name)
	}
	kctx, err := named("contexts", ctxName, "context")
	if err != nil {
		return nil, err
	}
	str := func(m map[string]any, k string) string { s, _ := m[k].(string); return s }
	cluster, err := named("clusters", str(kctx, "cluster"), "cluster")
	if err != nil {
		return nil, err
	}
	user := map[string]any{}
	if u := str(kctx, "user"); u != "" {
		if user, err = named("users", u, "user"); err != nil {
			return nil, err
		}
	}
	kc := &kubeconfig{
		Server: str(cluster, "server"), CAData: str(cluster, "certificate-authority-data"), CAFile: str(cluster, "certificate-authority"),
		Token: str(user, "token"), TokenFile: str(user, "tokenFile"),
		ClientCertData: str(user, "client-certificate-data"), ClientCertFile: str(user, "client-certificate"),
		ClientKeyData: str(user, "client-key-data"), ClientKeyFile: str(user, "client-key"),
	}
	kc.InsecureSkipTLSVerify, _ = cluster["insecure-skip-tls-verify"].(bool)
	if kc.Server == "" {
		return nil, errors.New("kubeconfig: the current context's cluster has no server")
	}
	if _, ok := user["exec"]; ok {
		return nil, errors.New("kubeconfig: exec credential plugins are not supported; use a token or client certificate")
	}
	return kc, nil
}
