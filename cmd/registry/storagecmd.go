package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/driver"
	"github.com/berth-registry/berth/storage/driver/filesystem"
	"github.com/berth-registry/berth/storage/driver/s3"
)

// The commands that work on the configured storage, beside a running
// registry or instead of it: garbage-collect, repository delete and
// purge-uploads.

// openDriver opens the configured driver: S3 when storage.s3 names a
// bucket, else the filesystem directory. With mustExist the directory must
// exist already: a command's mistyped path would otherwise be created,
// found empty, and reported as clean. It returns where the data is (for
// the log) and a function that closes the driver, making a filesystem's
// journaled writes durable in place. metrics (nil: none) receives the
// filesystem journal's metrics.
func openDriver(ctx context.Context, cfg Config, mustExist bool, metrics prometheus.Registerer) (driver.Driver, string, func() error, error) {
	if s3c := cfg.Storage.S3; s3c.Bucket != "" {
		d, err := s3.New(ctx, s3c.s3Options())
		if err != nil {
			return nil, "", nil, err
		}
		where := "s3://" + s3c.Bucket + "/" + strings.Trim(s3c.RootDirectory, "/")
		return d, where, func() error { return nil }, nil
	}
	root := cfg.Storage.Filesystem.RootDirectory
	if mustExist {
		fi, err := os.Stat(root)
		if err != nil {
			return nil, "", nil, fmt.Errorf("storage.filesystem.rootdirectory: %w", err)
		}
		if !fi.IsDir() {
			return nil, "", nil, fmt.Errorf("storage.filesystem.rootdirectory: %s is not a directory", root)
		}
	}
	d, err := filesystem.NewWithOptions(root, filesystem.Options{Registerer: metrics})
	if err != nil {
		return nil, "", nil, err
	}
	return d, d.Root(), d.Close, nil
}

// openStorage opens the configured storage for a command that runs beside
// the registry or instead of it.
func openStorage(ctx context.Context, cfg Config) (*storage.Store, func() error, error) {
	drv, _, closeDriver, err := openDriver(ctx, cfg, true, nil)
	if err != nil {
		return nil, nil, err
	}
	return storage.NewWithOptions(drv, cfg.storageOptions()), closeDriver, nil
}

// storageCommand is the shape of the commands that work on the configured
// storage: run gets the configuration, the open store, a context that
// ends on SIGINT or SIGTERM, and the command's output.
func storageCommand(cmd *cobra.Command, path string, run func(ctx context.Context, cfg Config, store *storage.Store, out io.Writer) error) (err error) {
	cfg, err := loadConfig(path)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	store, closeStore, err := openStorage(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := closeStore(); cerr != nil && err == nil {
			err = fmt.Errorf("closing storage: %w", cerr)
		}
	}()
	return run(ctx, cfg, store, cmd.OutOrStdout())
}

// cliLogger is the log of the storage commands: warnings and errors only
// (failed removals), since the commands print their own report.
func cliLogger(cfg Config, w io.Writer) *slog.Logger {
	return slog.New(errorsOnly{newLogger(cfg, w).Handler()})
}

func garbageCollectCommand() *cobra.Command {
	var dryRun, deleteUntagged bool
	cmd := &cobra.Command{
		Use:     "garbage-collect [config.yml]",
		Aliases: []string{"gc"},
		Short:   "Remove blobs no manifest references, and what retention and --delete-untagged drop",
		Long: `Remove what no manifest references from the configured storage: blobs, and the
repositories' links to them. With --delete-untagged (or storage.gc.deleteuntagged) manifests
that no tag reaches go too, and storage.gc.retention rules remove tags.

It is safe while registries serve the same storage, as long as they all use the same
storage.gc.graceperiod: content younger than the grace period, and content a request relied
on within it, stays. Only one collection runs on a storage at a time; if another holds it,
this one exits non-zero and removes nothing.

It prints each removal, then a summary. The configuration's dryrun and deleteuntagged apply
as well as the flags.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return storageCommand(cmd, argAt(args, 0), func(ctx context.Context, cfg Config, store *storage.Store, out io.Writer) error {
				opts := cfg.gcOptions()
				opts.DryRun = opts.DryRun || dryRun
				opts.DeleteUntagged = opts.DeleteUntagged || deleteUntagged
				opts.Logger = cliLogger(cfg, cmd.ErrOrStderr())
				prefix := "removed "
				if opts.DryRun {
					prefix = "would remove "
				}
				var mu sync.Mutex
				opts.OnRemove = func(r storage.Removal) {
					mu.Lock()
					defer mu.Unlock()
					fmt.Fprintln(out, prefix+r.String())
				}
				rep, err := store.CollectGarbage(ctx, opts)
				if errors.Is(err, storage.ErrGCRunning) {
					return fmt.Errorf("%w: nothing was removed; run again when it has finished", err)
				}
				fmt.Fprintln(out, gcSummary(rep, opts.DryRun))
				if err != nil {
					return err
				}
				if rep.Failed > 0 {
					return fmt.Errorf("%s failed (logged above); the next collection tries again", plural(rep.Failed, "removal"))
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&dryRun, "dry-run", "d", false, "print what would be removed, and remove nothing")
	cmd.Flags().BoolVarP(&deleteUntagged, "delete-untagged", "m", false, "also remove manifests that no tag reaches")
	return cmd
}

// gcSummary is the last line garbage-collect prints.
func gcSummary(r storage.GCReport, dryRun bool) string {
	var b strings.Builder
	if dryRun {
		b.WriteString("dry run, nothing was removed; would remove ")
	} else {
		b.WriteString("removed ")
	}
	fmt.Fprintf(&b, "%s (%s, %d bytes), %s, %s and %s",
		plural(r.BlobsDeleted, "blob"), humanBytes(r.BytesFreed), r.BytesFreed,
		plural(r.ManifestsDeleted, "manifest"), plural(r.TagsDeleted, "tag"), plural(r.LinksDeleted, "link"))
	fmt.Fprintf(&b, "; %s, %s, %s seen", plural(r.Repositories, "repository"), plural(r.Manifests, "manifest"), plural(r.Blobs, "blob"))
	if r.Kept > 0 {
		fmt.Fprintf(&b, "; %d kept because requests used them meanwhile", r.Kept)
	}
	if r.Failed > 0 {
		fmt.Fprintf(&b, "; %d failed", r.Failed)
	}
	fmt.Fprintf(&b, "; took %v", r.Duration.Round(time.Millisecond))
	return b.String()
}

func repositoryCommand() *cobra.Command {
	repo := &cobra.Command{
		Use:   "repository",
		Short: "Manage repositories in the configured storage",
	}
	repo.AddCommand(&cobra.Command{
		Use:   "delete NAME [config.yml]",
		Short: "Delete a repository: its tags, manifests and links",
		Long: `Delete repository NAME from the configured storage: its tags, manifests, links, referrers
index and upload sessions. Repositories nested under it (NAME/sub) stay. The blobs it used are
freed by the next garbage collection, if no other repository uses them and once they are
older than storage.gc.graceperiod. The registry may be running.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			return storageCommand(cmd, argAt(args, 1), func(ctx context.Context, cfg Config, store *storage.Store, out io.Writer) error {
				tags, _, err := store.Tags(ctx, name, storage.Page{N: -1})
				if err != nil && !errors.Is(err, storage.ErrNameUnknown) {
					return err
				}
				if err := store.DeleteRepository(ctx, name); err != nil {
					if errors.Is(err, storage.ErrNameUnknown) {
						return fmt.Errorf("repository %s: %w", name, err)
					}
					return err
				}
				what := "no tags"
				if len(tags) > 0 {
					what = plural(len(tags), "tag") + " (" + strings.Join(tags, ", ") + ")"
				}
				fmt.Fprintf(out, "deleted repository %s: %s, its manifests and links\n", name, what)
				fmt.Fprintf(out, "blobs no other repository uses are freed by the next garbage collection (registry garbage-collect), once older than the grace period (%v)\n",
					cfg.Storage.GC.GracePeriod)
				return nil
			})
		},
	})
	return repo
}

func purgeUploadsCommand() *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "purge-uploads [config.yml]",
		Short: "Remove abandoned upload sessions",
		Long: `Remove upload sessions that began longer ago than storage.maintenance.uploadpurging.age
(default 168h) and received no byte for as long. The registry may be running. The
configuration's dryrun applies as well as the flag.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return storageCommand(cmd, argAt(args, 0), func(ctx context.Context, cfg Config, store *storage.Store, out io.Writer) error {
				up := cfg.Storage.Maintenance.UploadPurging
				opts := storage.PurgeOptions{Age: up.Age, DryRun: up.DryRun || dryRun, Logger: cliLogger(cfg, cmd.ErrOrStderr())}
				prefix := "removed "
				if opts.DryRun {
					prefix = "would remove "
				}
				opts.OnRemove = func(repo, id string) { fmt.Fprintf(out, "%supload %s %s\n", prefix, repo, id) }
				rep, err := store.PurgeUploads(ctx, opts)
				if err != nil {
					return err
				}
				verb := "removed"
				if opts.DryRun {
					verb = "dry run, nothing was removed; would remove"
				}
				fmt.Fprintf(out, "%s %d of %s (older than %v)\n", verb, rep.Removed, plural(rep.Sessions, "upload session"), opts.Age)
				if rep.Failed > 0 {
					return fmt.Errorf("%s failed (logged above)", plural(rep.Failed, "removal"))
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&dryRun, "dry-run", "d", false, "print what would be removed, and remove nothing")
	return cmd
}

// argAt returns args[i], or "" when there are not that many.
func argAt(args []string, i int) string {
	if i < len(args) {
		return args[i]
	}
	return ""
}

// plural is "1 blob", "2 blobs", "3 repositories".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	if strings.HasSuffix(noun, "y") {
		return fmt.Sprintf("%d %sies", n, strings.TrimSuffix(noun, "y"))
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// humanBytes is n in binary units: "512 B", "1.5 KiB", "3.2 GiB".
func humanBytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, unit := float64(n)/1024, 0
	for v >= 1024 && unit < 5 {
		v /= 1024
		unit++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTPE"[unit])
}
