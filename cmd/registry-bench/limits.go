package main

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

const (
	// limitTime is how long each CPU limit is measured.
	limitTime = time.Second
	// diskSize is what limit-disk writes, whatever --size is: less
	// would mostly measure the page cache.
	diskSize = 1 << 30
)

// limit measures one of this machine's limits.
func (b *bencher) limit(test string) Result {
	var r Result
	var err error
	switch test {
	case "limit-sha256":
		r = limitSHA256()
	case "limit-aesgcm":
		r, err = limitAESGCM()
	case "limit-disk":
		r, err = limitDisk(b.opt.DiskDir, diskSize, b.newBlob(blockSize))
	default:
		err = fmt.Errorf("unknown test %q", test)
	}
	r.Target, r.Test = "machine", test
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// limitSHA256 is sha256 throughput of one core.
func limitSHA256() Result {
	buf := make([]byte, blockSize)
	h := sha256.New()
	var n int64
	start := time.Now()
	for time.Since(start) < limitTime {
		h.Write(buf)
		n += int64(len(buf))
	}
	d := time.Since(start)
	return Result{Unit: "MB/s", Value: throughput(n, d), Bytes: n, Seconds: d.Seconds()}
}

// limitAESGCM is AES-128-GCM sealing throughput of one core in TLS-sized
// records (16 KiB): what bounds one TLS connection's sender or receiver.
func limitAESGCM() (Result, error) {
	block, err := aes.NewCipher(make([]byte, 16))
	if err != nil {
		return Result{}, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return Result{}, err
	}
	nonce := make([]byte, aead.NonceSize())
	record := make([]byte, 16<<10)
	out := make([]byte, 0, len(record)+aead.Overhead())
	var n int64
	start := time.Now()
	for time.Since(start) < limitTime {
		for range 64 {
			nonce[0]++ // a benchmark: the key is all zeros anyway
			out = aead.Seal(out[:0], nonce, record, nil)
			n += int64(len(record))
		}
	}
	d := time.Since(start)
	return Result{Unit: "MB/s", Value: throughput(n, d), Bytes: n, Seconds: d.Seconds()}, nil
}

// limitDisk writes size bytes to a new file in dir in 1 MiB writes, fsyncs
// it, and removes it: the durable write throughput a registry's push can
// reach at most.
func limitDisk(dir string, size int64, data *Blob) (Result, error) {
	f, err := os.CreateTemp(dir, "registry-bench-disk-*")
	if err != nil {
		return Result{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	data.Size = size
	buf := make([]byte, blockSize)
	start := time.Now()
	n, err := io.CopyBuffer(onlyWriter{f}, data.Reader(), buf)
	if err == nil {
		err = f.Sync()
	}
	d := time.Since(start)
	if err != nil {
		return Result{}, err
	}
	return Result{Unit: "MB/s", Value: throughput(n, d), Bytes: n, Seconds: d.Seconds()}, nil
}

// onlyWriter hides *os.File's ReadFrom, so the copy makes plain 1 MiB
// writes.
type onlyWriter struct{ w io.Writer }

func (o onlyWriter) Write(p []byte) (int, error) { return o.w.Write(p) }

// pullBound is the throughput of one core that decrypts (AES-GCM) and
// hashes (sha256) every byte, as a pulling client does in one goroutine.
func pullBound(sha, aesgcm float64) float64 {
	if sha <= 0 || aesgcm <= 0 {
		return 0
	}
	return 1 / (1/sha + 1/aesgcm)
}

// resetPeak resets the peak RSS (VmHWM) of process pid (Linux ≥ 4.0;
// needs the right to write the process's clear_refs).
func resetPeak(pid int) bool {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) == nil
}

// readPeak returns VmHWM of process pid in KiB, 0 when unknown.
func readPeak(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	return parseVmHWM(b)
}

func parseVmHWM(status []byte) int64 {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}
