package loader

import (
	"fmt"

	"github.com/rauta-lb/rauta/syncookie"
)

// RotateCookieKey makes a fresh SYN cookie key the one new cookies use. The
// previous key stays valid (cookies carry which slot made them), the one
// before it is overwritten: a cookie lives between one and two rotation
// periods. Call it once at start-up, then on a timer.
func (l *Loader) RotateCookieKey() error {
	var current uint32
	if err := l.objs.SyncookieCurrent.Lookup(uint32(0), &current); err != nil {
		return fmt.Errorf("read cookie key slot: %w", err)
	}
	next := (current + 1) % 2
	if !l.cookieKeyed {
		// At start-up both slots are empty: fill the current one, so a
		// cookie made with slot 0 never checks against a zero key.
		next = current
		l.cookieKeyed = true
	}
	key, err := syncookie.NewKey()
	if err != nil {
		return err
	}
	if err := l.objs.SyncookieKeys.Put(next, key); err != nil {
		return fmt.Errorf("write cookie key: %w", err)
	}
	if err := l.objs.SyncookieCurrent.Put(uint32(0), next); err != nil {
		return fmt.Errorf("switch cookie key: %w", err)
	}
	return nil
}
