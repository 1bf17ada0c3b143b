package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
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
	case "limit-recv":
		r, err = limitRecv()
	case "limit-s3put", "limit-s3get":
		if b.s3 == nil {
			err = errors.New("needs an S3 store (compare --s3)")
		} else if test == "limit-s3put" {
			r, err = b.s3.limitPut(context.Background(), b.newBlob(b.opt.Size))
		} else {
			r, err = b.s3.limitGet(context.Background(), b.newBlob(b.opt.Size))
		}
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

// limitRecv is how fast one core takes bytes in from a loopback TCP
// connection (the kernel's receive path and the copy out of it), measured
// as the receiving thread's CPU time where the system reports it (Linux),
// else as wall time. A sender in this process writes 256 KiB at a time.
func limitRecv() (Result, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return Result{}, err
	}
	defer ln.Close()
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, blockSize)
		for start := time.Now(); time.Since(start) < limitTime; {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		return Result{}, err
	}
	defer c.Close()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0, start := threadCPU(), time.Now()
	n, err := io.CopyBuffer(io.Discard, c, make([]byte, blockSize))
	cpu, d := threadCPU()-cpu0, time.Since(start)
	if err != nil {
		return Result{}, err
	}
	if cpu > 0 {
		d = cpu
	}
	return Result{Unit: "MB/s", Value: throughput(n, d), Bytes: n, Seconds: d.Seconds()}, nil
}

// pullBound is the throughput of one core that takes every byte in from
// the socket, decrypts it (AES-GCM) and hashes it (sha256), as a pulling
// client does in one goroutine. recv ≤ 0 leaves the socket out.
func pullBound(sha, aesgcm, recv float64) float64 {
	if sha <= 0 || aesgcm <= 0 {
		return 0
	}
	per := 1/sha + 1/aesgcm
	if recv > 0 {
		per += 1 / recv
	}
	return 1 / per
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
