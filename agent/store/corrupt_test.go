package store

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// validStore writes a closed store with enough allocations to span several
// pages and returns its path.
func validStore(t *testing.T) string {
	t.Helper()
	path := storePath(t)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// One transaction: 300 fsyncs would make every case slow.
	err = s.update(func(tx *bolt.Tx) error {
		tn, err := s.txn(tx)
		if err != nil {
			return err
		}
		for i := range 300 {
			a := alloc(podName(i), fmt.Sprintf("c%d", i), fmt.Sprintf("10.0.%d.%d", (i+1)/256, (i+1)%256))
			a, ip, err := normalize(a)
			if err != nil {
				return err
			}
			if err := tn.put(&a, ip); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeFile writes data as a store file in a fresh directory.
func writeFile(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "allocations.db")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// withBolt edits a store file with raw bbolt, as another program (or a
// bug) would.
func withBolt(t *testing.T, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenCorruptFiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	valid, err := os.ReadFile(validStore(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(valid) < 8*4096 {
		t.Fatalf("the valid store is only %d bytes; the truncation cases need more", len(valid))
	}
	cases := map[string]struct {
		data   []byte
		target error
		reason string
	}{
		"random bytes":     {random(64 << 10), ErrCorrupt, "not a bbolt file"},
		"a few bytes":      {random(100), ErrCorrupt, "too short"},
		"zeros":            {make([]byte, 32<<10), ErrCorrupt, "no bbolt magic"},
		"truncated half":   {valid[:len(valid)/2], ErrCorrupt, "truncated"},
		"truncated odd":    {valid[:3*4096+100], ErrCorrupt, "truncated"},
		"meta pages only":  {valid[:2*4096], ErrCorrupt, "truncated"},
		"text file":        {[]byte(strings.Repeat("apiVersion: terway/v1\n", 1000)), ErrCorrupt, "not a bbolt file"},
		"meta 0 from tail": {append(append([]byte{}, valid[:4096]...), random(3*4096)...), ErrCorrupt, ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			path := writeFile(t, tc.data)
			s, err := Open(path, Options{})
			if err == nil {
				s.Close()
				t.Fatal("opened a corrupt file")
			}
			wantErr(t, err, tc.target, path, tc.reason)
			t.Log(err)
		})
	}
}

func TestOpenEmptyFileInitialises(t *testing.T) {
	path := writeFile(t, nil)
	s := openAt(t, path)
	mustAlloc(t, s, vpcReq(cidr24, "default/a", "c1"))
	verify(t, s)
}

func TestOpenForeignAndInconsistent(t *testing.T) {
	for _, tc := range []struct {
		name   string
		edit   func(tx *bolt.Tx) error
		target error
		reason string
	}{
		{"another program's buckets", func(tx *bolt.Tx) error {
			b, err := tx.CreateBucket([]byte("widgets"))
			if err != nil {
				return err
			}
			return b.Put([]byte("k"), []byte("v"))
		}, ErrCorrupt, `"widgets"`},
		{"wrong format marker", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(keyFormat, []byte("etcd"))
		}, ErrCorrupt, "meta.format"},
		{"newer schema", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(keySchema, []byte("2"))
		}, ErrNewerSchema, "schema version 2"},
		{"garbage schema", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(keySchema, []byte("v1"))
		}, ErrCorrupt, "meta.schema"},
		{"missing bucket", func(tx *bolt.Tx) error {
			return tx.DeleteBucket(bucketIPs)
		}, ErrCorrupt, `"ips"`},
		{"lost pod index entry", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketPods).Delete([]byte(podName(7)))
		}, ErrCorrupt, "pod index"},
		{"duplicate IP", func(tx *bolt.Tx) error { // two records claim one IP
			k := []byte("c8/eth0")
			v := tx.Bucket(bucketAllocs).Get(k)
			v = []byte(strings.Replace(string(v), `"ip":"10.0.0.9"`, `"ip":"10.0.0.10"`, 1))
			return tx.Bucket(bucketAllocs).Put(k, v)
		}, ErrCorrupt, "IP index"},
		{"record not JSON", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketAllocs).Put([]byte("c3/eth0"), []byte("{"))
		}, ErrCorrupt, `"c3/eth0"`},
		{"record under a wrong key", func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketAllocs)
			v := b.Get([]byte("c3/eth0"))
			if err := b.Delete([]byte("c3/eth0")); err != nil {
				return err
			}
			return b.Put([]byte("c3/eth1"), v)
		}, ErrCorrupt, "wrong key"},
		{"bad pod CIDR", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(keyPodCIDR, []byte("10.0.0.0/33"))
		}, ErrCorrupt, "meta.podCIDR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := validStore(t)
			withBolt(t, path, tc.edit)
			s, err := Open(path, Options{})
			if err == nil {
				s.Close()
				t.Fatal("opened an inconsistent store")
			}
			wantErr(t, err, tc.target, path, tc.reason)
			t.Log(err)
		})
	}
	t.Run("foreign file without buckets of ours", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "other.db")
		withBolt(t, path, func(tx *bolt.Tx) error {
			_, err := tx.CreateBucket([]byte("key"))
			return err
		})
		_, err := Open(path, Options{})
		wantErr(t, err, ErrCorrupt, path, `"key"`)
	})
}

// TestOpenScribbledFiles flips random bytes of a valid store, hundreds of
// times: Open either fails with an error naming the file, or gives a store
// whose every operation works or fails cleanly. Nothing may panic or crash.
func TestOpenScribbledFiles(t *testing.T) {
	valid, err := os.ReadFile(validStore(t))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	dir := t.TempDir()
	opened := 0
	const rounds = 200
	for round := range rounds {
		data := append([]byte{}, valid...)
		lo := 2 * 4096 // leave the meta pages valid: bbolt would simply refuse
		if round%10 == 0 {
			lo = 0
		}
		for range 1 + rng.IntN(8) {
			data[lo+rng.IntN(len(data)-lo)] = byte(rng.Uint32())
		}
		path := filepath.Join(dir, fmt.Sprintf("scribbled-%03d.db", round))
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(path, Options{})
		if err != nil {
			if round%25 == 0 {
				t.Logf("round %d: %v", round, err)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("round %d: error does not name the file: %v", round, err)
			}
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNewerSchema) {
				t.Errorf("round %d: error is not ErrCorrupt: %v", round, err)
			}
			continue
		}
		opened++ // the flips hit unused bytes: the store must still work
		_, _ = s.List()
		_ = s.Check()
		_, _, _ = s.AllocateVPC(vpcReq(netip16, "default/new", "cnew"))
		_, _ = s.GC(nil)
		if err := s.Close(); err != nil {
			t.Errorf("round %d: close: %v", round, err)
		}
	}
	t.Logf("%d of %d scribbled files opened (flips in unused bytes)", opened, rounds)
}
