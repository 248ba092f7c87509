package caisson;

import java.io.BufferedReader;
import java.io.File;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintWriter;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.TreeSet;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.BlockLocation;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.permission.FsPermission;
import org.apache.hadoop.hdfs.DistributedFileSystem;
import org.apache.hadoop.hdfs.HdfsConfiguration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.hdfs.MiniDFSCluster.DataNodeProperties;
import org.apache.hadoop.hdfs.server.datanode.DataNode;

/**
 * A MiniDFSCluster for Caisson's tests: one NameNode and N DataNodes in this
 * JVM, all on 127.0.0.1.
 *
 * <pre>
 * java -cp ... caisson.MiniDfs --dir DIR [--port 9000] [--datanodes 3]
 *      [--replication 2] [--block-size 16777216] [--control-port 9001]
 * </pre>
 *
 * When the cluster is up it writes DIR/ready (the NameNode URL) and prints
 * "Ready". Fault tests drive it through a line protocol on the control port
 * (127.0.0.1 only), one command per connection or several, one reply line
 * each ("ok ..." or "err ..."):
 *
 * <pre>
 * status                  ok namenode=up datanodes=0,1,2
 * stop-datanode I         stop DataNode I (its index at start-up)
 * start-datanode I        restart it on the same ports
 * locations PATH          ok 0,2: the DataNodes holding any block of PATH
 * stop-namenode           shut the NameNode down (DataNodes keep running)
 * start-namenode          restart it on the same port and wait until it is active
 * shutdown                stop everything and exit
 * </pre>
 */
public final class MiniDfs {
    private final MiniDFSCluster cluster;
    /** Transfer address ("127.0.0.1:port") of each DataNode, by its start-up index. */
    private final List<String> dataNodeAddrs = new ArrayList<>();
    /** DataNodes stopped through the control port, to restart them later. */
    private final Map<Integer, DataNodeProperties> stopped = new TreeMap<>();
    private boolean nameNodeUp = true;

    private MiniDfs(MiniDFSCluster cluster) {
        this.cluster = cluster;
        for (DataNode dn : cluster.getDataNodes()) {
            dataNodeAddrs.add(dn.getDatanodeId().getXferAddr());
        }
    }

    public static void main(String[] args) {
        try {
            run(args);
        } catch (Throwable e) {
            // The cluster's threads are not daemons: a start that failed
            // half way would otherwise leave the process up, never ready.
            e.printStackTrace();
            System.exit(1);
        }
    }

    private static void run(String[] args) throws Exception {
        Map<String, String> opts = parse(args);
        File dir = new File(required(opts, "dir"));
        int port = Integer.parseInt(opts.getOrDefault("port", "9000"));
        int dataNodes = Integer.parseInt(opts.getOrDefault("datanodes", "3"));
        int controlPort = Integer.parseInt(opts.getOrDefault("control-port", "9001"));
        // Bound before the cluster starts: its DataNodes take ephemeral
        // ports, and one of them could otherwise take the control port a
        // caller picked free a moment ago.
        ServerSocket control = new ServerSocket(controlPort, 16, InetAddress.getLoopbackAddress());

        Configuration conf = new HdfsConfiguration();
        conf.set("dfs.replication", opts.getOrDefault("replication", "2"));
        // Small blocks so that test files span several and a 1 GiB benchmark
        // file does not sit in one block.
        conf.set("dfs.blocksize", opts.getOrDefault("block-size", "16777216"));
        conf.set("dfs.namenode.fs-limits.min-block-size", "65536");
        // Quick heartbeats: a restarted DataNode or NameNode is usable sooner.
        conf.set("dfs.heartbeat.interval", "1");
        conf.set("dfs.namenode.safemode.extension", "0");
        conf.set("dfs.namenode.rpc-bind-host", "127.0.0.1");
        conf.set("dfs.datanode.address", "127.0.0.1:0");
        conf.set("dfs.datanode.http.address", "127.0.0.1:0");
        conf.set("dfs.datanode.ipc.address", "127.0.0.1:0");

        File base = new File(dir, "data");
        MiniDFSCluster cluster = new MiniDFSCluster.Builder(conf, base)
            .nameNodePort(port)
            .nameNodeHttpPort(0)
            .numDataNodes(dataNodes)
            .format(true)
            .build();
        cluster.waitActive();

        // Permissions stay on (they are part of what a client meets); the
        // root is world-writable with the sticky bit, like /tmp, so that any
        // user name a test configures can make its own prefix.
        DistributedFileSystem fs = cluster.getFileSystem();
        fs.setPermission(new Path("/"), new FsPermission((short) 01777));

        MiniDfs mini = new MiniDfs(cluster);

        String url = "hdfs://127.0.0.1:" + cluster.getNameNodePort();
        File ready = new File(dir, "ready");
        File tmp = new File(dir, "ready.tmp");
        Files.writeString(tmp.toPath(), url + "\n", StandardCharsets.UTF_8);
        Files.move(tmp.toPath(), ready.toPath(), StandardCopyOption.ATOMIC_MOVE);
        System.out.println("Ready " + url + " control 127.0.0.1:" + control.getLocalPort());
        System.out.flush();

        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            ready.delete();
            cluster.shutdown();
        }));

        while (true) {
            try (Socket s = control.accept()) {
                if (!mini.serve(s)) {
                    break;
                }
            } catch (IOException e) {
                System.err.println("control connection: " + e);
            }
        }
        control.close();
        System.exit(0);
    }

    /** Answers the commands on one connection; false once told to shut down. */
    private boolean serve(Socket s) throws IOException {
        BufferedReader in = new BufferedReader(new InputStreamReader(s.getInputStream(), StandardCharsets.UTF_8));
        PrintWriter out = new PrintWriter(s.getOutputStream(), true, StandardCharsets.UTF_8);
        String line;
        while ((line = in.readLine()) != null) {
            line = line.trim();
            if (line.isEmpty()) {
                continue;
            }
            if (line.equals("shutdown")) {
                out.println("ok");
                return false;
            }
            String reply;
            try {
                reply = "ok" + command(line);
            } catch (Exception e) {
                // The first line only: the reply is one line.
                String msg = String.valueOf(e.getMessage()).split("\n", 2)[0];
                reply = "err " + e.getClass().getSimpleName() + ": " + msg;
            }
            System.err.println("control: " + line + " -> " + reply);
            out.println(reply);
        }
        return true;
    }

    private synchronized String command(String line) throws Exception {
        String[] words = line.split("\\s+", 2);
        String arg = words.length > 1 ? words[1] : null;
        switch (words[0]) {
            case "status": {
                return " namenode=" + (nameNodeUp ? "up" : "down") + " datanodes=" + join(running());
            }
            case "stop-datanode": {
                int i = dataNodeIndex(arg);
                if (stopped.containsKey(i)) {
                    throw new IllegalStateException("datanode " + i + " is already stopped");
                }
                DataNodeProperties props = cluster.stopDataNode(dataNodeAddrs.get(i));
                if (props == null) {
                    throw new IllegalStateException("datanode " + i + " is not running");
                }
                stopped.put(i, props);
                return "";
            }
            case "start-datanode": {
                int i = dataNodeIndex(arg);
                DataNodeProperties props = stopped.remove(i);
                if (props == null) {
                    throw new IllegalStateException("datanode " + i + " is not stopped");
                }
                cluster.restartDataNode(props, true);
                if (nameNodeUp) {
                    cluster.waitActive();
                }
                return "";
            }
            case "locations": {
                if (arg == null) {
                    throw new IllegalArgumentException("locations needs a path");
                }
                DistributedFileSystem fs = cluster.getFileSystem();
                FileStatus st = fs.getFileStatus(new Path(arg));
                TreeSet<Integer> holders = new TreeSet<>();
                for (BlockLocation b : fs.getFileBlockLocations(st, 0, st.getLen())) {
                    for (String name : b.getNames()) {
                        int i = dataNodeAddrs.indexOf(name);
                        if (i >= 0) {
                            holders.add(i);
                        }
                    }
                }
                return " " + join(holders);
            }
            case "stop-namenode": {
                if (!nameNodeUp) {
                    throw new IllegalStateException("the namenode is already stopped");
                }
                cluster.shutdownNameNode(0);
                nameNodeUp = false;
                return "";
            }
            case "start-namenode": {
                if (nameNodeUp) {
                    throw new IllegalStateException("the namenode is running");
                }
                cluster.restartNameNode(0, true);
                nameNodeUp = true;
                return "";
            }
            default:
                throw new IllegalArgumentException("unknown command: " + words[0]);
        }
    }

    private List<Integer> running() {
        List<Integer> up = new ArrayList<>();
        for (int i = 0; i < dataNodeAddrs.size(); i++) {
            if (!stopped.containsKey(i)) {
                up.add(i);
            }
        }
        return up;
    }

    private int dataNodeIndex(String arg) {
        if (arg == null) {
            throw new IllegalArgumentException("which datanode? 0.." + (dataNodeAddrs.size() - 1));
        }
        int i = Integer.parseInt(arg);
        if (i < 0 || i >= dataNodeAddrs.size()) {
            throw new IllegalArgumentException("no datanode " + i + " (0.." + (dataNodeAddrs.size() - 1) + ")");
        }
        return i;
    }

    private static String join(Iterable<Integer> xs) {
        StringBuilder sb = new StringBuilder();
        for (int x : xs) {
            if (sb.length() > 0) {
                sb.append(',');
            }
            sb.append(x);
        }
        return sb.toString();
    }

    private static Map<String, String> parse(String[] args) {
        Map<String, String> opts = new TreeMap<>();
        for (int i = 0; i < args.length; i++) {
            if (!args[i].startsWith("--") || i + 1 >= args.length) {
                throw new IllegalArgumentException("usage: --name value ...; bad argument " + args[i]);
            }
            opts.put(args[i].substring(2), args[++i]);
        }
        return opts;
    }

    private static String required(Map<String, String> opts, String name) {
        String v = opts.get(name);
        if (v == null) {
            throw new IllegalArgumentException("--" + name + " is required");
        }
        return v;
    }
}
