package wire

import (
	"fmt"
	"unicode"
)

// The CNI spec's rules for container ids, network names and interface
// names, checked without regular expressions: compiling one at start-up
// costs the plugin binary time on every call.

// maxIfNameLen is the kernel's IFNAMSIZ less its terminating NUL.
const maxIfNameLen = 15

// validName reports whether s is a container id or network name the spec
// allows: a letter or digit, then letters, digits, '_', '.' or '-'.
func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
			return false
		}
	}
	return true
}

// checkName returns why s is not a valid container id or network name, or
// "".
func checkName(s string) string {
	if !validName(s) {
		return "has characters other than letters, digits, '_', '.' and '-', or does not start with a letter or digit"
	}
	return ""
}

// checkIfName returns why name cannot be an interface name, or "".
func checkIfName(name string) string {
	switch {
	case len(name) > maxIfNameLen:
		return fmt.Sprintf("is longer than %d bytes", maxIfNameLen)
	case name == "." || name == "..":
		return "is . or .."
	}
	for _, r := range name {
		if r == '/' || r == ':' || unicode.IsSpace(r) {
			return "contains '/', ':' or white space"
		}
	}
	return ""
}
