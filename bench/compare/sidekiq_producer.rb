# A paced Sidekiq producer in a process of its own, as producer.mjs is for
# graphile-worker and BullMQ: ruby sidekiq_producer.rb RATE SECONDS, with
# REDIS_URL and SIDEKIQ_DB set. Each job's one argument is its creation time on
# the machine's monotonic clock. Prints the number of jobs sent.
require "sidekiq"
require_relative "sidekiq_common"

rate = Integer(ARGV.fetch(0), 10)
seconds = Integer(ARGV.fetch(1), 10)
# Like producer.mjs: up to 4 interleaved schedules, so one slow push does not
# hold up the others; a thread each, with a pooled connection each.
lanes = [4, [1, rate / 50].max].min
Sidekiq.logger.level = Logger::WARN
Redis.silence_deprecations = true  # as in sidekiq.rb: a warning per push otherwise
Sidekiq.redis = SidekiqBench.redis_options(lanes)

period = 1000.0 * lanes / rate
start = SidekiqBench.now_ms + 100
finish = start + seconds * 1000
sent = Array.new(lanes, 0)
threads = Array.new(lanes) do |i|
  Thread.new do
    at = start + period * i / lanes
    while at < finish
      wait = at - SidekiqBench.now_ms
      sleep(wait / 1000.0) if wait > 0
      # The class by name: the producer needs no copy of the worker's code.
      Sidekiq::Client.push("class" => "NoopJob", "args" => [SidekiqBench.now_ms])
      sent[i] += 1
      at += period
    end
  end
end
threads.each(&:join)
Sidekiq.redis_pool.shutdown(&:close)
puts sent.sum
