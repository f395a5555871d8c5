// Test workload for the JFR receiver: a hot method, an allocating method,
// a contended synchronized block and parking threads.
// Usage: java Workload SECONDS   (0 = run until killed)
import java.util.concurrent.locks.LockSupport;

public class Workload {
    static final Object LOCK = new Object();
    static volatile long sink;
    static volatile Object keep;

    static long hotMethod(long n) {
        long acc = 0;
        for (long i = 0; i < n; i++) {
            acc += (i * 31) ^ (acc >>> 3);
        }
        return acc;
    }

    static void allocatingMethod() {
        for (int i = 0; i < 1000; i++) {
            keep = new byte[1024 + (i % 64) * 16];
        }
    }

    static void contendedMethod() {
        synchronized (LOCK) {
            long end = System.nanoTime() + 5_000_000L;   // hold the monitor 5 ms
            while (System.nanoTime() < end) {
                sink += hotMethod(100);
            }
        }
    }

    static void parkingMethod() {
        LockSupport.parkNanos(30_000_000L);            // 30 ms
    }

    static Thread loop(String name, Runnable body, long deadline) {
        Thread t = new Thread(() -> {
            while (deadline == 0 || System.currentTimeMillis() < deadline) {
                body.run();
            }
        }, name);
        t.setDaemon(true);
        t.start();
        return t;
    }

    public static void main(String[] args) throws Exception {
        long seconds = args.length > 0 ? Long.parseLong(args[0]) : 0;
        long deadline = seconds == 0 ? 0 : System.currentTimeMillis() + seconds * 1000;
        Thread[] threads = {
            loop("hot", () -> sink += hotMethod(2_000_000), deadline),
            loop("alloc", Workload::allocatingMethod, deadline),
            loop("contender-1", Workload::contendedMethod, deadline),
            loop("contender-2", Workload::contendedMethod, deadline),
            loop("contender-3", Workload::contendedMethod, deadline),
            loop("parker", Workload::parkingMethod, deadline),
        };
        System.out.println("ready");
        System.out.flush();
        for (Thread t : threads) {
            t.join();
        }
    }
}
