//go:build !amd64

package kexec

// UnderTCG is false where baton does not read CPUID (the fast method is x86-64 only).
func UnderTCG() bool { return false }
