package routeros

import (
	"errors"
	"fmt"
	"strings"
)

// The kinds of failure a caller can act on; test with errors.Is.
var (
	ErrNotFound        = errors.New("not found on the RDS")
	ErrAlreadyExists   = errors.New("already exists on the RDS")
	ErrNoSpace         = errors.New("not enough space on the RDS")
	ErrInvalidArgument = errors.New("invalid argument") // also for a value refused before sending
	// ErrTransport: the RDS could not be reached or the connection broke; the command may
	// or may not have run. Retrying later is the remedy.
	ErrTransport = errors.New("RDS unreachable")
)

// Kind classifies a CommandError.
type Kind int

const (
	KindOther Kind = iota
	KindNotFound
	KindAlreadyExists
	KindNoSpace
	KindInvalidArgument
	KindTransport
)

var (
	kindNames     = [...]string{"other", "not-found", "already-exists", "no-space", "invalid-argument", "transport"}
	kindSentinels = [...]error{nil, ErrNotFound, ErrAlreadyExists, ErrNoSpace, ErrInvalidArgument, ErrTransport}
)

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// CommandError is a command the RDS refused or could not run.
type CommandError struct {
	Op      string // the typed operation, e.g. "CreateDisk"
	Kind    Kind
	Command string // the RouterOS command line (it never carries secrets)
	Output  string // what RouterOS printed (stdout and stderr), trimmed
	Exit    int    // exit status; -1 when none was received
	Err     error  // the underlying transport error, if any
}

func (e *CommandError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "routeros %s: ", e.Op)
	switch {
	case e.Kind == KindTransport && e.Err != nil:
		fmt.Fprintf(&b, "%v (RDS unreachable; check the address, SSH port and network, it is retried with backoff)", e.Err)
	case e.Output != "":
		b.WriteString(firstLine(e.Output))
	case e.Exit > 0:
		fmt.Fprintf(&b, "exit status %d without output", e.Exit)
	default:
		b.WriteString(e.Kind.String())
	}
	if e.Command != "" {
		fmt.Fprintf(&b, " [command: %s]", e.Command)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrNotFound) (etc.) true for a CommandError of that kind.
func (e *CommandError) Is(target error) bool {
	return target != nil && uint(e.Kind) < uint(len(kindSentinels)) && kindSentinels[e.Kind] == target
}

func (e *CommandError) Unwrap() error { return e.Err }

// kindTexts lists RouterOS error texts (lower-case) by kind, tried in order.
type kindTexts []struct {
	kind  Kind
	texts []string
}

// errorPrefixes start a line of RouterOS error output. Listings never start a line with
// these words (items start with an index, comments with `;;;`), so a match is an error,
// whichever stream it came on and whatever the exit status.
var errorPrefixes = kindTexts{
	{KindNotFound, []string{"no such item"}},
	{KindInvalidArgument, []string{"bad command name", "syntax error", "expected end of command",
		"expected command name", "invalid value for argument", "input does not match any value of",
		"value of ", // "value of size out of range …"
		"ambiguous value of", "missing value"}},
	{KindNoSpace, []string{"not enough space", "no space left"}},
	{KindOther, []string{"failure:"}}, // refined by failureKinds
}

// failureKinds refine `failure: …` by what the text contains.
var failureKinds = kindTexts{
	{KindAlreadyExists, []string{"already exists", "already have"}},
	{KindNoSpace, []string{"not enough space", "no space", "disk full", "disk is full"}},
	{KindNotFound, []string{"no such", "not found", "does not exist"}},
	{KindInvalidArgument, []string{"invalid"}},
}

func (t kindTexts) find(l string, match func(s, text string) bool) (Kind, bool) {
	for _, k := range t {
		for _, text := range k.texts {
			if match(l, text) {
				return k.kind, true
			}
		}
	}
	return KindOther, false
}

// classifyOutput finds a RouterOS error in a command's output: its kind and line.
func classifyOutput(out string) (Kind, string, bool) {
	for line := range strings.Lines(out) {
		l := strings.ToLower(strings.TrimSpace(line))
		if k, ok := errorPrefixes.find(l, strings.HasPrefix); ok {
			if k == KindOther {
				k, _ = failureKinds.find(l, strings.Contains)
			}
			return k, strings.TrimSpace(line), true
		}
	}
	return KindOther, "", false
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

// invalidf builds an ErrInvalidArgument error; nothing was sent to the RDS.
func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidArgument, fmt.Sprintf(format, args...))
}
