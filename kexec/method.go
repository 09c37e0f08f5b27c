package kexec

import (
	"errors"
	"fmt"
	"time"
)

// Method is how a kernel is loaded.
type Method string

const (
	// Fast loads with kexec_load(2): the kernel decompressed and relocated by baton while the
	// services still run, and a purgatory that hashes nothing. Falls back to File when the
	// running kernel refuses kexec_load (lockdown, kexec_load_disabled) or the image needs
	// what the fast method does not do.
	Fast Method = "fast"
	// File loads with kexec_file_load(2): the kernel checks the image (and its signature where
	// required), its purgatory hashes every segment at the jump, and the bzImage decompresses
	// itself.
	File Method = "file"
)

// ParseMethod accepts "fast", "file" and "" (the default, fast).
func ParseMethod(s string) (Method, error) {
	switch Method(s) {
	case "", Fast:
		return Fast, nil
	case File:
		return File, nil
	}
	return "", fmt.Errorf("unknown kexec method %q (fast or file)", s)
}

// Result is what a load did: the method that loaded the kernel, and why it is not the one
// asked for.
type Result struct {
	Method   Method
	Fallback string // why the fast method was not used; "" when it was, or file was asked for
	Fast     *FastInfo
	Took     time.Duration
}

// Note is the result in one line, for the console and the API's answer.
func (r Result) Note() string {
	switch {
	case r.Fallback != "":
		return fmt.Sprintf("method file (fast refused: %s)", r.Fallback)
	case r.Fast != nil:
		note := fmt.Sprintf("method fast (%s payload extracted in %v; KASLR: %s", r.Fast.Compression,
			r.Fast.Extract.Round(time.Millisecond), r.Fast.KASLR)
		if r.Fast.Initrd != "" {
			note += "; " + r.Fast.Initrd
		}
		return note + ")"
	}
	return "method " + string(r.Method)
}

// Variables so tests can stand in for the system calls.
var (
	fastLoad = loadFast
	fileLoad = Load
)

// LoadWith loads img with method m. Fast falls back to File unless the image itself is bad
// (ImageError: no method could boot it); when both are refused the error names both
// refusals. A failed load leaves the running system as it was.
func LoadWith(img Image, m Method) (Result, error) {
	start := time.Now()
	if m == File {
		err := fileLoad(img)
		return Result{Method: File, Took: time.Since(start)}, err
	}
	info, err := fastLoad(img)
	if err == nil {
		return Result{Method: Fast, Fast: &info, Took: time.Since(start)}, nil
	}
	var bad *ImageError
	if errors.As(err, &bad) {
		return Result{Method: Fast, Took: time.Since(start)}, fmt.Errorf("kexec: %w", err)
	}
	res := Result{Method: File, Fallback: err.Error()}
	if ferr := fileLoad(img); ferr != nil {
		res.Took = time.Since(start)
		return res, &BothRefused{Fast: err, File: ferr}
	}
	res.Took = time.Since(start)
	return res, nil
}

// BothRefused is a load that neither method could do.
type BothRefused struct{ Fast, File error }

func (e *BothRefused) Error() string {
	return fmt.Sprintf("kexec: both methods refused: fast: %v; file: %v", e.Fast, e.File)
}

func (e *BothRefused) Unwrap() []error { return []error{e.Fast, e.File} }
