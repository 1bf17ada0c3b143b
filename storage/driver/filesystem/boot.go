package filesystem

// Which boot of the machine a journal was written in decides what start-up
// does with it once its process is gone. A process that died while the
// machine kept running (killed, crashed) left every change it had applied
// in the page cache, so the change needs only to be made durable, and a
// record it had not applied yet belongs to a write it never acknowledged.
// Replaying such a journal would do harm: other processes on the same
// directory (a registry beside a garbage-collect command, replicas on one
// volume) may have written the same paths since, and replay would revert
// them. Only a journal of an earlier boot, which a crash of the machine may
// have left with applied changes that never reached the disk, is replayed.
// Journals whose boot cannot be told (older files, systems without a boot
// identity) are replayed, as before.

// currentBoot identifies this boot of the machine, "" where it cannot be
// told; a variable for tests.
var currentBoot = bootID()

// sameBootAsNow reports whether a journal written in boot b was written in
// this boot.
func sameBootAsNow(b string) bool {
	return b != "" && currentBoot != "" && sameBoot(b, currentBoot)
}
