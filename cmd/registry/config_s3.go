package main

import "github.com/berth-registry/berth/storage/driver/s3"

// S3Config is Distribution's storage.s3 section (see storage/driver/s3).
// Empty accesskey and secretkey use the AWS credential chain: the
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY variables, the shared
// credentials file, then the instance's or task's role.
type S3Config struct {
	AccessKey      string `yaml:"accesskey"`
	SecretKey      string `yaml:"secretkey"`
	SessionToken   string `yaml:"sessiontoken"`
	Region         string `yaml:"region"`
	RegionEndpoint string `yaml:"regionendpoint"`
	ForcePathStyle bool   `yaml:"forcepathstyle"`
	Bucket         string `yaml:"bucket"`
	Encrypt        bool   `yaml:"encrypt"`
	KeyID          string `yaml:"keyid"`
	// Secure is https to a regionendpoint given without a scheme
	// (default true).
	Secure     *bool `yaml:"secure"`
	SkipVerify bool  `yaml:"skipverify"`
	// V4Auth is accepted for Distribution's files; requests are always
	// signed with version 4.
	V4Auth bool `yaml:"v4auth"`
	// ChunkSize is the multipart part size and what each upload holds in
	// memory (default 10 MiB, at least 5 MiB).
	ChunkSize                   int64  `yaml:"chunksize"`
	MultipartCopyChunkSize      int64  `yaml:"multipartcopychunksize"`
	MultipartCopyMaxConcurrency int    `yaml:"multipartcopymaxconcurrency"`
	MultipartCopyThresholdSize  int64  `yaml:"multipartcopythresholdsize"`
	RootDirectory               string `yaml:"rootdirectory"`
	StorageClass                string `yaml:"storageclass"`
	UserAgent                   string `yaml:"useragent"`
	ObjectACL                   string `yaml:"objectacl"`
	// RedirectEndpoint is Berth's: the endpoint presigned redirect URLs
	// name, when clients reach the store at another address than the
	// registry does.
	RedirectEndpoint string `yaml:"redirectendpoint"`
	// UseDualStack, Accelerate and LogLevel are accepted for
	// Distribution's files and have no effect.
	UseDualStack bool   `yaml:"usedualstack"`
	Accelerate   bool   `yaml:"accelerate"`
	LogLevel     string `yaml:"loglevel"`
}

// s3Options maps the section onto the driver's options.
func (c S3Config) s3Options() s3.Options {
	return s3.Options{
		Region: c.Region, RegionEndpoint: c.RegionEndpoint, ForcePathStyle: c.ForcePathStyle,
		Bucket: c.Bucket, AccessKey: c.AccessKey, SecretKey: c.SecretKey, SessionToken: c.SessionToken,
		RootDirectory: c.RootDirectory, Secure: c.Secure, SkipVerify: c.SkipVerify,
		ChunkSize: c.ChunkSize, MultipartCopyChunkSize: c.MultipartCopyChunkSize,
		MultipartCopyMaxConcurrency: c.MultipartCopyMaxConcurrency, MultipartCopyThresholdSize: c.MultipartCopyThresholdSize,
		Encrypt: c.Encrypt, KeyID: c.KeyID, StorageClass: c.StorageClass, ObjectACL: c.ObjectACL,
		UserAgent: c.UserAgent, RedirectEndpoint: c.RedirectEndpoint,
	}
}
