# The `jobctl bench` workload on Sidekiq (Debian 12's ruby-sidekiq, 6.4.1): N
# no-op jobs pushed in bulk, drained by a real Sidekiq server (its Launcher,
# Manager and Processors, with its BasicFetch), then creation -> handler start
# at a paced rate from a producer process of its own (sidekiq_producer.rb).
#
#   ruby sidekiq.rb [--jobs=N] [--concurrency=64] [--processes=1] [--rate=1000]
#                   [--latency-seconds=10] [--chunk=10000]
#   with REDIS_URL and SIDEKIQ_DB (a Redis database number, empty at the start)
#
# Ruby's GIL lets one thread run Ruby at a time, so one Sidekiq process is at
# most one core's worth of Ruby however many threads it has. Sidekiq's
# concurrency is a thread count per process (10 by default in 6.4): 64 threads
# in one process, --processes=1 (the default, the server in this process), is
# the one process of 64 handlers every system here gets. Sidekiq's usual
# deployment scales by running more processes, which --processes=P does: P
# forked servers of concurrency / P threads each, the same 64 handlers in all.
#
# Sidekiq keeps a job in Redis only until a Processor takes it (BasicFetch's
# BRPOP): a finished job leaves nothing behind but a counter, where jobhost
# keeps every job and writes a job_logs row per attempt, and a job taken by a
# process that dies is lost (Sidekiq's reliable fetch is in Sidekiq Pro). Every key lives in database
# SIDEKIQ_DB, which this script empties at the end (and refuses when it is not
# empty at the start).
require "sidekiq"
# Sidekiq.server? is `defined?(Sidekiq::CLI)`: loading the CLI, without running
# it, makes this process a server as the `sidekiq` command makes its own (the
# server's pool sizing and its check); the Launcher below is what CLI#run starts.
require "sidekiq/cli"
require "sidekiq/launcher"
require "rbconfig"
require_relative "sidekiq_common"

B = SidekiqBench

# Counts the handler runs of the process it lives in, and keeps the latency samples.
module Recorder
  @lock = Mutex.new
  @done = 0
  @last_ms = nil
  @latencies = []

  class << self
    def finished(latency_ms)
      now = B.now_ms
      @lock.synchronize do
        @done += 1
        @last_ms = now
        @latencies << latency_ms if latency_ms
      end
    end

    # [handler runs so far, monotonic time of the last one]
    def progress
      @lock.synchronize { [@done, @last_ms] }
    end

    def latencies
      @lock.synchronize { @latencies.dup }
    end
  end
end

# The no-op job, with Sidekiq's default options (queue "default", retry on).
# The bulk jobs have no argument; the producer's carry their creation time.
class NoopJob
  include Sidekiq::Worker

  def perform(created_ms = nil)
    started = B.now_ms
    Recorder.finished(created_ms && started - created_ms)
  end
end

# A Sidekiq server of `concurrency` Processor threads in the calling process,
# on the pool Sidekiq.redis holds.
def start_launcher
  launcher = Sidekiq::Launcher.new(Sidekiq.options)
  launcher.run
  launcher
end

def stop_launcher(launcher)
  # Quiets the Processors and waits for them: each leaves its BRPOP within
  # BasicFetch's 2 s timeout.
  launcher.stop
  # Sidekiq 6.4 leaves the heartbeat thread running after stop (launcher.rb says
  # so) and flushes its counters at exit: both would write keys after the
  # cleanup, so the thread is stopped and the counters flushed now.
  launcher.instance_variable_get(:@thread)&.kill
  Sidekiq::Launcher.flush_stats
end

# The server in this process (--processes=1).
class LocalServer
  def start
    @launcher = start_launcher
  end

  def progress
    Recorder.progress
  end

  # Stops the server; returns the latency samples.
  def finish
    stop_launcher(@launcher)
    Recorder.latencies
  end
end

# P servers, each in a process forked from this one, reporting
# "RUNS LAST_MS" over a pipe when their count moves and their latency samples
# when asked to stop (their end of the other pipe closed).
class ForkedServers
  def initialize(processes)
    @processes = processes
    @children = []
  end

  def start
    $stdout.flush
    @processes.times do
      report_r, report_w = IO.pipe
      stop_r, stop_w = IO.pipe
      pid = fork do
        report_r.close
        stop_w.close
        serve(report_w, stop_r)
      end
      report_w.close
      stop_r.close
      @children << {pid: pid, report: report_r, stop: stop_w, done: 0, last_ms: nil, latencies: nil}
    end
  end

  def progress
    read_reports(0)
    [@children.sum { |c| c[:done] }, @children.map { |c| c[:last_ms] }.compact.max]
  end

  def finish
    @children.each { |c| c[:stop].close }
    read_reports(nil) while @children.any? { |c| c[:latencies].nil? }
    @children.each do |c|
      _, status = Process.wait2(c[:pid])
      raise "sidekiq server process #{c[:pid]} exited with #{status.exitstatus}" unless status.success?
    end
    @children.flat_map { |c| c[:latencies] }
  end

  private

  # Reads what the children have sent, waiting up to timeout s (nil: until
  # one sends), and takes in every whole line.
  def read_reports(timeout)
    open = @children.select { |c| c[:latencies].nil? }.map { |c| c[:report] }
    ready, = IO.select(open, nil, nil, timeout)
    (ready || []).each do |io|
      c = @children.find { |x| x[:report] == io }
      chunk = io.read_nonblock(1 << 16, exception: false)
      next if chunk == :wait_readable
      raise "sidekiq server process #{c[:pid]} closed its pipe early" if chunk.nil?
      c[:buffer] = (c[:buffer] || +"") << chunk
      while (eol = c[:buffer].index("\n"))
        take(c, c[:buffer].slice!(0..eol).chomp)
      end
    end
  end

  def take(child, line)
    if line.start_with?("latencies")
      child[:latencies] = line.split(" ", 2)[1].to_s.split(",").map(&:to_f)
    else
      done, last = line.split
      child[:done] = Integer(done, 10)
      child[:last_ms] = Float(last)
    end
  end

  # The child: a pool of its own (the parent's sockets are not its to use), the
  # server, and the reports.
  def serve(report, stop)
    Sidekiq.redis = B.redis_options(Sidekiq.options[:concurrency] + 5)
    launcher = start_launcher
    reported = 0
    loop do
      done, last = Recorder.progress
      if done != reported
        report.puts "#{done} #{last}"
        report.flush
        reported = done
      end
      break if IO.select([stop], nil, nil, 0.005)  # readable: at EOF, the parent asks us to stop
    end
    stop_launcher(launcher)
    report.puts "latencies #{Recorder.latencies.join(",")}"
    report.close
    exit!(0)  # the parent's at_exit hooks are not this process's to run
  rescue Exception => e  # whatever it is, the child must not return into the parent's code
    warn "sidekiq server process #{Process.pid}: #{e.class}: #{e.message}"
    exit!(1)
  end
end

o = B.options("jobs" => 100_000, "concurrency" => 64, "processes" => 1, "rate" => 1000,
              "latency-seconds" => 10, "chunk" => 10_000)
processes = o["processes"]
unless processes >= 1 && (o["concurrency"] % processes).zero?
  raise ArgumentError, "--concurrency=#{o["concurrency"]} must be a multiple of --processes=#{processes}"
end
per_process = o["concurrency"] / processes

# The default logger's INFO level writes two lines per job (start, done); WARN
# keeps the handlers as quiet as the other systems' and stdout for the report.
Sidekiq.logger = Sidekiq::Logger.new($stderr, level: Logger::WARN)
# Debian 12 pairs Sidekiq 6.4.1 with redis-rb 4.8, which deprecates the
# positional timeout Sidekiq passes to BRPOP (and SADD's boolean reply) with a
# warning on stderr per call; silenced (redis-rb still builds the message).
Redis.silence_deprecations = true
Sidekiq.options[:concurrency] = per_process
Sidekiq.options[:queues] = ["default"]
# Sidekiq's own size for a server's pool: concurrency + 5 (one connection per
# Processor, plus the heartbeat, the scheduler's poller and the rest); it
# refuses fewer than concurrency + 2. Each process has a pool of its own.
Sidekiq.redis = B.redis_options(per_process + 5)

db = Integer(ENV["SIDEKIQ_DB"], 10)
keys = Sidekiq.redis(&:dbsize)
raise "database #{db} of REDIS_URL holds #{keys} keys; sidekiq.rb empties the database it uses, so give it an empty one" if keys.positive?

driver = Sidekiq.redis { |c| c._client.driver.name.split("::").last.downcase }
puts "config      Sidekiq #{Sidekiq::VERSION} Launcher, #{processes} process#{"es" if processes > 1} x #{per_process} threads " \
     "(#{processes == 1 ? "in this process" : "forked"}), BasicFetch, Ruby #{RUBY_VERSION}, redis-rb #{Redis::VERSION} " \
     "(#{driver} driver), pool #{per_process + 5} per process, logger WARN, Redis database #{db} (emptied at the end)"

t = B.now_ms
(0...o["jobs"]).step(o["chunk"]) do |i|
  n = [o["chunk"], o["jobs"] - i].min
  Sidekiq::Client.push_bulk("class" => NoopJob, "args" => Array.new(n) { [] })
end
B.print_enqueue(o["jobs"], B.now_ms - t, "push_bulk, #{o["chunk"]} per call")

servers = processes == 1 ? LocalServer.new : ForkedServers.new(processes)
t0 = B.now_ms
servers.start
B.wait_until(600_000, "every job to complete") { servers.progress[0] >= o["jobs"] }
done, last_ms = servers.progress
raise "#{o["jobs"]} jobs pushed but the handler ran #{done} times" if done != o["jobs"]
B.print_drain(o["jobs"], last_ms - t0, "server start -> last completion; #{done} handler runs")

sent = 0
if o["latency-seconds"].positive?
  producer = File.join(__dir__, "sidekiq_producer.rb")
  out = IO.popen([RbConfig.ruby, producer, o["rate"].to_s, o["latency-seconds"].to_s], &:read)
  raise "the sidekiq producer exited with #{$?.exitstatus}" unless $?.success?
  sent = Integer(out.strip, 10)
  B.wait_until(60_000, "the latency jobs") { servers.progress[0] - done >= sent }
end
latencies = servers.finish
raise "latency: #{sent} jobs sent but #{latencies.size} ran" if latencies.size != sent
B.print_latency(latencies, o["rate"], o["latency-seconds"]) if sent.positive?

Sidekiq.redis(&:flushdb)
Sidekiq.redis_pool.shutdown(&:close)
