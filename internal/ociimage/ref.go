package ociimage

import (
	"fmt"
	"regexp"
	"strings"
)

// Reference is an image name with a tag, split the way Docker's reference
// grammar splits it: [domain/]path:tag.
type Reference struct {
	Domain string // "" when the name has none (Docker Hub)
	Path   string // "terway-reconciler", "team/terway-reconciler"
	Tag    string
}

var (
	// One path component: lowercase alphanumerics joined by ., _, __ or dashes.
	pathComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$`)
	// A registry host, optionally with a port.
	domainPattern = regexp.MustCompile(`^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?$`)
	tagPattern    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
)

// ParseReference parses name:tag. The tag is required (an archive must say
// which tag the image gets), a digest is refused (the digest is what the
// archive computes), and the path must be lowercase as registries require.
func ParseReference(s string) (Reference, error) {
	if s == "" {
		return Reference{}, fmt.Errorf("image name: empty")
	}
	if strings.Contains(s, "@") {
		return Reference{}, fmt.Errorf("image name %q: a digest cannot be set, only name:tag", s)
	}
	slash := strings.LastIndex(s, "/")
	colon := strings.LastIndex(s, ":")
	if colon <= slash {
		return Reference{}, fmt.Errorf("image name %q: no tag (want name:tag)", s)
	}
	r := Reference{Tag: s[colon+1:]}
	if !tagPattern.MatchString(r.Tag) {
		return Reference{}, fmt.Errorf("image name %q: tag %q: letters, digits, _ . - only, not starting with . or -, at most 128", s, r.Tag)
	}
	rest := s[:colon]
	parts := strings.Split(rest, "/")
	// As Docker decides: the first component is a registry when it has a
	// dot or a port, or is localhost.
	if len(parts) > 1 && (strings.ContainsAny(parts[0], ".:") || parts[0] == "localhost") {
		if !domainPattern.MatchString(parts[0]) {
			return Reference{}, fmt.Errorf("image name %q: registry %q is not a host[:port]", s, parts[0])
		}
		r.Domain, parts = parts[0], parts[1:]
	}
	for _, p := range parts {
		if !pathComponent.MatchString(p) {
			return Reference{}, fmt.Errorf("image name %q: path component %q: lowercase letters and digits joined by . _ __ or -", s, p)
		}
	}
	r.Path = strings.Join(parts, "/")
	return r, nil
}

// Normalized is the fully qualified name the CRI and containerd use:
// "terway-reconciler:v1" is "docker.io/library/terway-reconciler:v1", so
// that a pod naming the short form finds the imported image.
func (r Reference) Normalized() string {
	domain, p := r.Domain, r.Path
	if domain == "" {
		domain = "docker.io"
		if !strings.Contains(p, "/") {
			p = "library/" + p
		}
	}
	return domain + "/" + p + ":" + r.Tag
}

// String is the reference as written.
func (r Reference) String() string {
	if r.Domain == "" {
		return r.Path + ":" + r.Tag
	}
	return r.Domain + "/" + r.Path + ":" + r.Tag
}
