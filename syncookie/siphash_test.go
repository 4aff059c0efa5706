package syncookie

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// The reference vector of the SipHash paper (Aumasson and Bernstein, 2012,
// appendix A) for a 16-byte message: key 00..0f, message 00..0f.
func TestSipHashReferenceVector(t *testing.T) {
	var k, m [16]byte
	for i := range 16 {
		k[i] = byte(i)
		m[i] = byte(i)
	}
	key := Key{K0: binary.LittleEndian.Uint64(k[:8]), K1: binary.LittleEndian.Uint64(k[8:])}
	got := sipHash2(binary.LittleEndian.Uint64(m[:8]), binary.LittleEndian.Uint64(m[8:]), key)
	const want = 0x3f2acc7f57c29bdb
	if got != want {
		t.Fatalf("SipHash-2-4 = %#x, want %#x", got, want)
	}
}

func TestCookieRoundTrip(t *testing.T) {
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewKey()
	tuple := Tuple{Client: netip.MustParseAddrPort("10.0.2.2:40000"), VIP: netip.MustParseAddrPort("10.0.0.100:80")}
	for _, o := range []Options{
		{MSS: 1460, WScale: 7, SACK: true},
		{MSS: 1400, WScale: NoWindowScale},
		{MSS: 536, WScale: 0, SACK: true},
	} {
		for idx := range 2 {
			var keys [2]Key
			keys[idx] = key
			keys[1-idx] = other
			c := Make(tuple, 12345, o, idx, key)
			got, ok := Check(tuple, 12345, c, keys)
			if !ok {
				t.Fatalf("cookie %#x for %+v (key %d) did not validate", c, o, idx)
			}
			want := o
			want.MSS = map[uint16]uint16{1460: 1460, 1400: 1220, 536: 536}[o.MSS]
			if got != want {
				t.Errorf("options %+v, want %+v", got, want)
			}
			if _, ok := Check(tuple, 12346, c, keys); ok {
				t.Error("cookie validated for another client ISN")
			}
			other := tuple
			other.Client = netip.MustParseAddrPort("10.0.2.2:40001")
			if _, ok := Check(other, 12345, c, keys); ok {
				t.Error("cookie validated for another port")
			}
			if _, ok := Check(tuple, 12345, c^0x20, keys); ok {
				t.Error("cookie with a flipped SACK bit validated")
			}
			keys[idx] = Key{}
			if _, ok := Check(tuple, 12345, c, keys); ok {
				t.Error("cookie validated after its key was dropped")
			}
		}
	}
}
