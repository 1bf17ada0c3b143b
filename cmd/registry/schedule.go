package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/berth-registry/berth/storage"
)

// Scheduled garbage collection and upload purging in the serving registry;
// the logic is the storage package's, this file only times it.

// startMaintenance starts the scheduled garbage collection and upload
// purging that cfg enables, on store, until ctx ends; a pull-through
// cache with a ttl has collections even when storage.gc is off. wait returns once
// both have stopped; a run in progress stops when ctx ends.
func startMaintenance(ctx context.Context, cfg Config, store *storage.Store, log *slog.Logger) (wait func()) {
	var wg sync.WaitGroup
	if gc := cfg.Storage.GC; gc.Enabled {
		log := log.With("task", "gc")
		opts := cfg.gcOptions()
		opts.Logger = log
		opts.OnRemove = func(r storage.Removal) { logRemoval(log, "garbage collection", opts.DryRun, r.String()) }
		log.Info("garbage collection scheduled", "interval", gc.Interval, "graceperiod", gc.GracePeriod,
			"deleteuntagged", gc.DeleteUntagged, "dryrun", gc.DryRun, "retention_rules", len(opts.Retention))
		wg.Go(func() {
			runEvery(ctx, gc.Interval, func(ctx context.Context) {
				_, err := store.CollectGarbage(ctx, opts)
				logRunError(ctx, log, "garbage collection", err)
			})
		})
	}
	if opts, interval, ok := cfg.proxyGCOptions(); ok && !cfg.Storage.GC.Enabled {
		// A pull-through cache with a ttl expires its content without
		// storage.gc, as Distribution's does.
		log := log.With("task", "gc", "for", "proxy.ttl")
		opts.Logger = log
		opts.OnRemove = func(r storage.Removal) { logRemoval(log, "garbage collection", false, r.String()) }
		log.Info("garbage collection scheduled for the pull-through cache's ttl", "interval", interval, "graceperiod", cfg.Storage.GC.GracePeriod)
		wg.Go(func() {
			runEvery(ctx, interval, func(ctx context.Context) {
				_, err := store.CollectGarbage(ctx, opts)
				logRunError(ctx, log, "garbage collection", err)
			})
		})
	}
	if up := cfg.Storage.Maintenance.UploadPurging; up.Enabled {
		log := log.With("task", "uploadpurging")
		opts := storage.PurgeOptions{Age: up.Age, DryRun: up.DryRun, Logger: log}
		opts.OnRemove = func(repo, id string) { logRemoval(log, "upload purge", up.DryRun, "upload "+repo+" "+id) }
		log.Info("upload purging scheduled", "interval", up.Interval, "age", up.Age, "dryrun", up.DryRun)
		wg.Go(func() {
			runEvery(ctx, up.Interval, func(ctx context.Context) {
				_, err := store.PurgeUploads(ctx, opts)
				logRunError(ctx, log, "upload purge", err)
			})
		})
	}
	return wg.Wait
}

// runEvery calls fn one interval after it is called, then one interval
// after each call returns, until ctx ends. There is no jitter: replicas
// that collect at the same moment are sorted out by the store's
// collection lock.
func runEvery(ctx context.Context, interval time.Duration, fn func(context.Context)) {
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fn(ctx)
		t.Reset(interval)
	}
}

// logRemoval logs one thing a scheduled run removed, or would remove.
func logRemoval(log *slog.Logger, task string, dryRun bool, what string) {
	if dryRun {
		log.Info(task+" would remove (dry run)", "what", what)
		return
	}
	log.Info(task+" removed", "what", what)
}

// logRunError logs how a scheduled run failed. The storage package logs
// the report of a run that got going, with its error; errors before that
// (taking the collection lock, listing repositories) are logged only
// here, so an error may show twice rather than not at all.
func logRunError(ctx context.Context, log *slog.Logger, task string, err error) {
	switch {
	case err == nil:
	case errors.Is(err, storage.ErrGCRunning):
		// Another replica, or the garbage-collect command, is at it.
		log.Info(task+" skipped: another one is running on this storage", "reason", err)
	case ctx.Err() != nil:
		log.Info(task+" stopped by shutdown", "err", err)
	default:
		log.Error(task+" failed; the next run tries again", "err", err)
	}
}
