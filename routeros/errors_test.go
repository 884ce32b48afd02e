package routeros

import (
	"errors"
	"testing"
)

func TestClassifyOutput(t *testing.T) {
	cases := []struct {
		out  string
		kind Kind
		err  error
	}{
		{"failure: disk with slot \"pvc-x\" already exists", KindAlreadyExists, ErrAlreadyExists},
		{"failure: already have such item", KindAlreadyExists, ErrAlreadyExists},
		{"failure: not enough space", KindNoSpace, ErrNoSpace},
		{"not enough space\r\n", KindNoSpace, ErrNoSpace},
		{"failure: no space left on device", KindNoSpace, ErrNoSpace},
		{"failure: disk is full", KindNoSpace, ErrNoSpace},
		{"no such item", KindNotFound, ErrNotFound},
		{"no such item\r\n", KindNotFound, ErrNotFound},
		{"failure: file does not exist", KindNotFound, ErrNotFound},
		{"bad command name prnt (line 1 column 7)", KindInvalidArgument, ErrInvalidArgument},
		{"syntax error (line 1 column 12)", KindInvalidArgument, ErrInvalidArgument},
		{"expected end of command (line 1 column 180)", KindInvalidArgument, ErrInvalidArgument},
		{"invalid value for argument file-size", KindInvalidArgument, ErrInvalidArgument},
		{"input does not match any value of nvme-tcp-export", KindInvalidArgument, ErrInvalidArgument},
		{"failure: something odd happened", KindOther, nil},
		{"  Failure: Something Odd\n", KindOther, nil},
	}
	for _, c := range cases {
		k, line, ok := classifyOutput(c.out)
		if !ok || k != c.kind || line == "" {
			t.Errorf("classifyOutput(%q) = %v, %q, %v; want %v", c.out, k, line, ok, c.kind)
			continue
		}
		e := &CommandError{Op: "Test", Kind: k, Output: c.out}
		if c.err != nil && !errors.Is(e, c.err) {
			t.Errorf("%q: errors.Is(%v, %v) is false", c.out, e, c.err)
		}
		for _, other := range []error{ErrNotFound, ErrAlreadyExists, ErrNoSpace, ErrInvalidArgument, ErrTransport} {
			if other != c.err && errors.Is(e, other) {
				t.Errorf("%q: also matches %v", c.out, other)
			}
		}
	}
}

func TestClassifyOutputIgnoresListings(t *testing.T) {
	for _, out := range []string{
		"",
		"Flags: B - BLOCK-DEVICE; t - NVME-TCP-EXPORT\n",
		"Flags: B - BLOCK-DEVICE\n;;; failure: in a comment\n 0 B type=file slot=\"no-such-item\"\n",
		" 0   name=pool/failure: type=directory\n",
		"7.24.4 (stable)\n",
	} {
		if k, line, ok := classifyOutput(out); ok {
			t.Errorf("classifyOutput(%q) = %v, %q: a listing is not an error", out, k, line)
		}
	}
}
