package natsbus

import (
	"errors"
	"fmt"
	"time"
)

// Defaults of Config, used for its zero values.
const (
	DefaultSubjectPrefix     = "wasmvisor.bus"
	DefaultMaxMessageBytes   = 64 << 10
	DefaultOutQueue          = 1024
	DefaultMaxInFlight       = 256
	DefaultInQueue           = 4096
	maxInQueueBytes          = 64 << 20
	DefaultMaxDeliver        = 5
	DefaultAckWait           = 30 * time.Second
	DefaultStream            = "WASMVISOR_BUS"
	DefaultStreamMaxAge      = 24 * time.Hour
	DefaultStreamMaxBytes    = 1 << 30
	DefaultConsumerInactive  = 24 * time.Hour
	maxTopics                = 1024
	maxTopicBytes            = 255
	maxMessageBytesLimit     = 8 << 20
	maxQueueLimit            = 1 << 20
	maxSubjectPrefixBytes    = 128
	maxMaxDeliver            = 100
	maxStreamReplicas        = 5
	minAckWait               = 100 * time.Millisecond
	defaultPublishStallWait  = 200 * time.Millisecond
	defaultPublishAckTimeout = 5 * time.Second
)

// Config is the `bus` subsection of the `cluster` configuration section: which topics of the
// local bus cross nodes, and the bounds of the crossing. The zero value bridges nothing.
// Every node of a cluster must hold the same Config: the subjects and the stream are shared.
type Config struct {
	// SubjectPrefix is the NATS subject prefix of the bus: topic T travels on
	// "<SubjectPrefix>.<escaped T>" (see Subject). Default DefaultSubjectPrefix.
	SubjectPrefix string `yaml:"subject_prefix"`
	// Topics are the local bus topics bridged, by exact name. A topic not listed stays on its
	// node.
	Topics []string `yaml:"topics"`
	// AtLeastOnce lists the topics of Topics carried by a JetStream stream (Stream) and
	// delivered at least once to every node, also to a node that was down when they were
	// published (within StreamMaxAge). The other topics are at most once: a node that is
	// not connected when a message passes does not see it.
	AtLeastOnce []string `yaml:"at_least_once"`
	// MaxMessageBytes bounds a bridged message's data, both ways; a longer one is dropped
	// (reason too_large). Default DefaultMaxMessageBytes, at most 8 MiB.
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// OutQueue bounds the local messages waiting to be sent to NATS; past it they are
	// dropped (reason out_queue_full). Default DefaultOutQueue.
	OutQueue int `yaml:"out_queue"`
	// InQueue bounds the messages of one at-most-once topic received from NATS and not yet
	// published on the local bus (the NATS client's pending limit of its subscription, in
	// messages; in bytes InQueue × MaxMessageBytes, at most 64 MiB); past it the client drops
	// them (reason slow_consumer). Default DefaultInQueue.
	InQueue int `yaml:"in_queue"`
	// MaxInFlight bounds the at-least-once messages of this node not yet acknowledged, each
	// way: published and waiting for the stream's ack, and delivered by the node's consumer
	// and waiting for this node's ack. Default DefaultMaxInFlight.
	MaxInFlight int `yaml:"max_in_flight"`
	// MaxDeliver bounds the deliveries of one at-least-once message to one node (the first
	// and the redeliveries). Default DefaultMaxDeliver.
	MaxDeliver int `yaml:"max_deliver"`
	// AckWait is how long the stream waits for a node's ack before it delivers again.
	// Default DefaultAckWait, at least 100ms.
	AckWait time.Duration `yaml:"ack_wait"`
	// Stream names the JetStream stream of the at-least-once topics. Default DefaultStream.
	Stream string `yaml:"stream"`
	// StreamMaxAge and StreamMaxBytes bound the stream; the oldest messages go first.
	// Defaults DefaultStreamMaxAge and DefaultStreamMaxBytes.
	StreamMaxAge   time.Duration `yaml:"stream_max_age"`
	StreamMaxBytes int64         `yaml:"stream_max_bytes"`
	// Replicas is the stream's replica count, 1 to 5. Default 1.
	Replicas int `yaml:"replicas"`
	// ConsumerInactive is how long a node's durable consumer outlives the node's absence
	// before the server removes it (and the node, back later, starts from new messages).
	// Default DefaultConsumerInactive.
	ConsumerInactive time.Duration `yaml:"consumer_inactive"`
}

// ConfigError is one invalid key of Config: Key is its full name (cluster.bus.topics),
// Reason what is wrong. Validate joins them.
type ConfigError struct {
	Key, Reason string
}

func (e *ConfigError) Error() string { return e.Key + ": " + e.Reason }

// ErrConfig is matched (errors.Is) by every *ConfigError.
var ErrConfig = errors.New("natsbus: invalid configuration")

// Is makes errors.Is(err, ErrConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrConfig }

const keyPrefix = "cluster.bus."

// Validate checks c and returns every problem, each a *ConfigError naming its key
// (cluster.bus.topics, ...), joined; nil when c is usable.
func (c Config) Validate() error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, &ConfigError{Key: keyPrefix + key, Reason: fmt.Sprintf(format, args...)})
	}
	if c.SubjectPrefix != "" {
		if len(c.SubjectPrefix) > maxSubjectPrefixBytes || !validSubject(c.SubjectPrefix) {
			add("subject_prefix", "want dot-separated tokens of letters, digits, - and _, at most %d bytes, got %q",
				maxSubjectPrefixBytes, c.SubjectPrefix)
		}
	}
	if len(c.Topics) > maxTopics {
		add("topics", "at most %d topics, got %d", maxTopics, len(c.Topics))
	}
	seen := map[string]bool{}
	for i, t := range c.Topics {
		switch {
		case t == "" || len(t) > maxTopicBytes:
			add(fmt.Sprintf("topics[%d]", i), "want 1 to %d bytes, got %d", maxTopicBytes, len(t))
		case seen[t]:
			add(fmt.Sprintf("topics[%d]", i), "%q listed twice", t)
		}
		seen[t] = true
	}
	alo := map[string]bool{}
	for i, t := range c.AtLeastOnce {
		switch {
		case !seen[t]:
			add(fmt.Sprintf("at_least_once[%d]", i), "%q is not in cluster.bus.topics", t)
		case alo[t]:
			add(fmt.Sprintf("at_least_once[%d]", i), "%q listed twice", t)
		}
		alo[t] = true
	}
	positive := func(key string, v, limit int) {
		if v < 0 || v > limit {
			add(key, "want 0 (the default) to %d, got %d", limit, v)
		}
	}
	positive("max_message_bytes", c.MaxMessageBytes, maxMessageBytesLimit)
	positive("out_queue", c.OutQueue, maxQueueLimit)
	positive("in_queue", c.InQueue, maxQueueLimit)
	positive("max_in_flight", c.MaxInFlight, maxQueueLimit)
	positive("max_deliver", c.MaxDeliver, maxMaxDeliver)
	positive("replicas", c.Replicas, maxStreamReplicas)
	if c.AckWait != 0 && c.AckWait < minAckWait {
		add("ack_wait", "want 0 (the default) or at least %v, got %v", minAckWait, c.AckWait)
	}
	if c.Stream != "" && (len(c.Stream) > 64 || escapeToken(c.Stream) != c.Stream) {
		add("stream", "want at most 64 letters, digits, - and _, got %q", c.Stream)
	}
	if c.StreamMaxAge < 0 {
		add("stream_max_age", "want 0 (the default) or more, got %v", c.StreamMaxAge)
	}
	if c.StreamMaxBytes < 0 {
		add("stream_max_bytes", "want 0 (the default) or more, got %d", c.StreamMaxBytes)
	}
	if c.ConsumerInactive < 0 {
		add("consumer_inactive", "want 0 (the default) or more, got %v", c.ConsumerInactive)
	}
	return errors.Join(errs...)
}

// withDefaults is c with its zero values replaced by the defaults.
func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = DefaultSubjectPrefix
	}
	def(&c.MaxMessageBytes, DefaultMaxMessageBytes)
	def(&c.OutQueue, DefaultOutQueue)
	def(&c.MaxInFlight, DefaultMaxInFlight)
	def(&c.InQueue, DefaultInQueue)
	def(&c.MaxDeliver, DefaultMaxDeliver)
	def(&c.Replicas, 1)
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.StreamMaxAge == 0 {
		c.StreamMaxAge = DefaultStreamMaxAge
	}
	if c.StreamMaxBytes == 0 {
		c.StreamMaxBytes = DefaultStreamMaxBytes
	}
	if c.ConsumerInactive == 0 {
		c.ConsumerInactive = DefaultConsumerInactive
	}
	return c
}
