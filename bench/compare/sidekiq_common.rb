# Shared by sidekiq.rb and sidekiq_producer.rb: the clock, options, the Redis
# settings and the report lines, shaped like common.mjs's (and so like
# `jobctl bench`'s), so run.sh's summary reads every system the same way.

module SidekiqBench
  module_function

  # CLOCK_MONOTONIC in milliseconds: the clock common.mjs uses too, one for
  # every process on the machine, so the producer and the worker can compare.
  def now_ms
    Process.clock_gettime(Process::CLOCK_MONOTONIC, :float_millisecond)
  end

  # --name=value arguments over defaults; integer defaults take integers.
  def options(defaults, argv = ARGV)
    out = defaults.dup
    argv.each do |arg|
      m = /\A--([a-z-]+)=(.*)\z/.match(arg)
      unless m && out.key?(m[1])
        raise ArgumentError, "unknown argument #{arg}; known: #{defaults.keys.join(", ")}"
      end
      out[m[1]] = defaults[m[1]].is_a?(Integer) ? Integer(m[2], 10) : m[2]
    end
    out
  end

  def require_env(name)
    v = ENV[name]
    raise "#{name} is not set" if v.nil? || v.empty?
    v
  end

  # REDIS_URL's server, on the database number SIDEKIQ_DB: the benchmark's
  # keys live in a database of their own, which the worker empties at the end.
  # redis-rb lets an explicit db: override the URL's.
  def redis_options(size)
    db = Integer(require_env("SIDEKIQ_DB"), 10)
    {url: require_env("REDIS_URL"), db: db, size: size}
  end

  def rate(n, ms)
    (n / (ms / 1000.0)).round
  end

  def print_enqueue(n, ms, how)
    puts format("enqueue     %d jobs in %.2f s = %d jobs/s (%s)", n, ms / 1000.0, rate(n, ms), how)
  end

  def print_drain(n, ms, how)
    puts format("drain       %d jobs in %.2f s = %d jobs/s (%s)", n, ms / 1000.0, rate(n, ms), how)
  end

  # The same rank as common.mjs: the smallest sample with at least p of them at or below it.
  def percentile(sorted, p)
    sorted[[[(p * sorted.size).ceil - 1, 0].max, sorted.size - 1].min]
  end

  def print_latency(samples, rate, seconds)
    s = samples.sort
    f = ->(p) { format("%.2f", percentile(s, p)) }
    puts "latency     #{s.size} jobs at #{rate}/s for #{seconds} s, creation -> handler start: " \
         "p50 #{f.(0.5)} ms  p90 #{f.(0.9)} ms  p99 #{f.(0.99)} ms  max #{format("%.2f", s.last)} ms"
  end

  # Returns once the block holds, checking every every_ms; raises after timeout_ms.
  def wait_until(timeout_ms, what, every_ms = 5)
    deadline = now_ms + timeout_ms
    until yield
      raise "timed out after #{timeout_ms} ms waiting for #{what}" if now_ms > deadline
      sleep(every_ms / 1000.0)
    end
  end
end
