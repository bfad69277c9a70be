/*
 * fastcapa's only C: DPDK's receive call, its mbuf accessors and the port
 * set-up are inline functions or macros in DPDK's headers, which Rust cannot
 * call. Each function here is one small step the Rust side (src/dpdk/) drives;
 * nothing is kept here between calls. Errors come back as negative errno
 * values plus, where DPDK has more to say, a message in `err`.
 */
/* rte_eth_read_clock (hardware timestamps) is still experimental in 22.11. */
#define ALLOW_EXPERIMENTAL_API 1
#define _GNU_SOURCE 1
#include <rte_config.h>

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <rte_bus.h>
#include <rte_dev.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_log.h>
#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>

/* DPDK's log goes to this memory stream while the EAL starts and the port
 * is set up, so a failure can be told in one line (ours, or DPDK's last
 * message) rather than DPDK's many; on success it is passed on to stderr. */
static char *log_buf;
static size_t log_len;
static FILE *log_mem;

static void log_hold(void)
{
    if (log_mem != NULL)
        return;
    log_mem = open_memstream(&log_buf, &log_len);
    if (log_mem != NULL)
        rte_openlog_stream(log_mem);
}

/* Ends the holding: what DPDK said goes to stderr when `show`, and DPDK's
 * messages from now on go to stderr too, never stdout. */
void fcapa_log_release(int show)
{
    if (log_mem == NULL)
        return;
    fflush(log_mem);
    if (show && log_len > 0)
        fwrite(log_buf, 1, log_len, stderr);
    rte_openlog_stream(stderr);
    fclose(log_mem);
    free(log_buf);
    log_mem = NULL;
    log_buf = NULL;
    log_len = 0;
}

/* The last non-empty line held, into err (left as it is when none). */
void fcapa_log_last(char *err, size_t errlen)
{
    if (log_mem == NULL)
        return;
    fflush(log_mem);
    const char *last = NULL;
    size_t last_len = 0;
    const char *p = log_buf;
    while (p != NULL && *p != '\0') {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len > 0) {
            last = p;
            last_len = len;
        }
        p = nl ? nl + 1 : NULL;
    }
    if (last != NULL)
        snprintf(err, errlen, "%.*s", (int)last_len, last);
}

/* The EAL's runtime directory (/var/run/dpdk/PREFIX) outlives the process.
 * Empty, as it is without shared config or telemetry, it goes at once
 * (after --user the process may no longer remove it); otherwise at exit. */
static char runtime_dir[PATH_MAX];

static void remove_runtime_dir(void)
{
    if (runtime_dir[0] != '\0')
        rmdir(runtime_dir);
}

int fcapa_eal_init(int argc, char **argv, char *err, size_t errlen)
{
    log_hold();
    /* The EAL prints its usage on stdout and a FATAL line on stderr when
     * its arguments are wrong: both are silenced (the log holds the reason). */
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(STDOUT_FILENO), saved_err = dup(STDERR_FILENO);
    int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (null >= 0 && saved_out >= 0 && saved_err >= 0) {
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
    }
    /* The EAL pins the calling thread to its main lcore, and every thread
     * started from it later (producers, librdkafka's) would inherit that:
     * the process keeps the cores it had, --cpus pins the workers. */
    cpu_set_t cpus;
    int have_cpus = sched_getaffinity(0, sizeof(cpus), &cpus) == 0;
    int ret = rte_eal_init(argc, argv);
    int saved = rte_errno;
    if (have_cpus)
        sched_setaffinity(0, sizeof(cpus), &cpus);
    fflush(stdout);
    fflush(stderr);
    if (saved_out >= 0) {
        dup2(saved_out, STDOUT_FILENO);
        close(saved_out);
    }
    if (saved_err >= 0) {
        dup2(saved_err, STDERR_FILENO);
        close(saved_err);
    }
    if (null >= 0)
        close(null);
    if (ret < 0) {
        snprintf(err, errlen, "%s", rte_strerror(saved));
        fcapa_log_last(err, errlen);
        fcapa_log_release(0);
        return -(saved ? saved : EINVAL);
    }
    snprintf(runtime_dir, sizeof(runtime_dir), "%s", rte_eal_get_runtime_dir());
    if (rmdir(runtime_dir) == 0)
        runtime_dir[0] = '\0';
    else
        atexit(remove_runtime_dir);
    return ret;
}

const char *fcapa_strerror(int errnum)
{
    return rte_strerror(errnum);
}

/* Makes the calling thread known to the EAL (an lcore id, so the mempool
 * gives it a per-thread cache). Best effort: 0 or a negative errno. */
int fcapa_thread_register(void)
{
    return rte_thread_register() == 0 ? 0 : -rte_errno;
}

void fcapa_thread_unregister(void)
{
    rte_thread_unregister();
}

/* Probes `devargs` (a PCI address or a virtual device with its arguments)
 * unless the EAL already did, and finds its ethdev port. */
int fcapa_port_find(const char *devargs, uint16_t *port_id, char *err, size_t errlen)
{
    int ret = rte_dev_probe(devargs);
    if (ret < 0 && ret != -EEXIST) {
        snprintf(err, errlen, "no such DPDK device (%s)", rte_strerror(-ret));
        return ret;
    }
    struct rte_dev_iterator it;
    uint16_t id;
    RTE_ETH_FOREACH_MATCHING_DEV(id, devargs, &it) {
        *port_id = id;
        rte_eth_iterator_cleanup(&it);
        return 0;
    }
    /* The iterator matches the bus's form; a virtual device's port is
     * named after the device, the part before the first comma. */
    char name[RTE_ETH_NAME_MAX_LEN];
    snprintf(name, sizeof(name), "%.*s", (int)strcspn(devargs, ","), devargs);
    if (rte_eth_dev_get_port_by_name(name, port_id) == 0)
        return 0;
    snprintf(err, errlen, "the device has no ethernet port");
    return -ENODEV;
}

/* A symmetric Toeplitz key (0x6d5a repeated): both directions of a flow
 * hash alike, so they land on one queue. Long enough for any NIC's key. */
static uint8_t symmetric_key[64];

/* What the port could do, for the statistics header and the docs. */
struct fcapa_port_info {
    uint16_t max_rx_queues;
    uint16_t nb_desc;       /* descriptors per queue after the driver's limits */
    uint32_t mbufs;         /* mbufs in the pool */
    uint64_t rss_hf;        /* hash types RSS spreads on (0: no RSS) */
    int hw_timestamp;       /* receive timestamps from the NIC */
    int ts_offset;          /* the timestamp dynfield's offset */
    uint64_t ts_flag;       /* the ol_flags bit saying it is set */
    char driver[64];
};

int fcapa_port_setup(uint16_t port, uint16_t nb_rxq, uint16_t nb_desc, uint16_t burst,
                     int want_timestamp, struct fcapa_port_info *info, char *err, size_t errlen)
{
    struct rte_eth_dev_info dev;
    int ret = rte_eth_dev_info_get(port, &dev);
    if (ret != 0) {
        snprintf(err, errlen, "cannot read the port's capabilities: %s", rte_strerror(-ret));
        return ret;
    }
    snprintf(info->driver, sizeof(info->driver), "%s", dev.driver_name);
    info->max_rx_queues = dev.max_rx_queues;
    if (nb_rxq > dev.max_rx_queues) {
        snprintf(err, errlen, "port (driver %s) gives at most %u receive queue(s), %u asked (-q)",
                 dev.driver_name, dev.max_rx_queues, nb_rxq);
        return -EINVAL;
    }
    struct rte_eth_conf conf;
    memset(&conf, 0, sizeof(conf));
    uint64_t hf = (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP | RTE_ETH_RSS_SCTP) &
                  dev.flow_type_rss_offloads;
    if (nb_rxq > 1 && hf != 0) {
        for (size_t i = 0; i < sizeof(symmetric_key); i += 2) {
            symmetric_key[i] = 0x6d;
            symmetric_key[i + 1] = 0x5a;
        }
        conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
        conf.rx_adv_conf.rss_conf.rss_key = symmetric_key;
        conf.rx_adv_conf.rss_conf.rss_key_len =
            dev.hash_key_size ? dev.hash_key_size : 40;
        if (conf.rx_adv_conf.rss_conf.rss_key_len > sizeof(symmetric_key))
            conf.rx_adv_conf.rss_conf.rss_key_len = sizeof(symmetric_key);
        conf.rx_adv_conf.rss_conf.rss_hf = hf;
        info->rss_hf = hf;
    } else {
        info->rss_hf = 0;
    }
    info->hw_timestamp = 0;
    if (want_timestamp && (dev.rx_offload_capa & RTE_ETH_RX_OFFLOAD_TIMESTAMP))
        conf.rxmode.offloads |= RTE_ETH_RX_OFFLOAD_TIMESTAMP;
    /* No transmit queues: fastcapa only receives. Drivers built on queue
     * pairs (net_af_xdp) refuse that; they get as many transmit queues,
     * set up and never used. */
    uint16_t nb_txq = 0;
    ret = rte_eth_dev_configure(port, nb_rxq, 0, &conf);
    if (ret == -EINVAL && dev.max_tx_queues >= nb_rxq) {
        nb_txq = nb_rxq;
        ret = rte_eth_dev_configure(port, nb_rxq, nb_txq, &conf);
    }
    if (ret != 0) {
        snprintf(err, errlen, "cannot configure the port with %u receive queue(s): %s", nb_rxq,
                 rte_strerror(-ret));
        return ret;
    }
    if (conf.rxmode.offloads & RTE_ETH_RX_OFFLOAD_TIMESTAMP) {
        int offset = -1;
        uint64_t flag = 0;
        if (rte_mbuf_dyn_rx_timestamp_register(&offset, &flag) == 0) {
            info->hw_timestamp = 1;
            info->ts_offset = offset;
            info->ts_flag = flag;
        }
    }
    if (!info->hw_timestamp) {
        /* Some virtual drivers (net_pcap) stamp packets without offering the
         * offload: the field is there once they registered it. */
        int offset = rte_mbuf_dynfield_lookup(RTE_MBUF_DYNFIELD_TIMESTAMP_NAME, NULL);
        int bit = rte_mbuf_dynflag_lookup(RTE_MBUF_DYNFLAG_RX_TIMESTAMP_NAME, NULL);
        if (offset >= 0 && bit >= 0) {
            info->hw_timestamp = 2;
            info->ts_offset = offset;
            info->ts_flag = 1ULL << bit;
        }
    }
    uint16_t desc = nb_desc;
    ret = rte_eth_dev_adjust_nb_rx_tx_desc(port, &desc, NULL);
    if (ret != 0) {
        snprintf(err, errlen, "cannot size the receive queues: %s", rte_strerror(-ret));
        return ret;
    }
    info->nb_desc = desc;
    /* Every descriptor holds an mbuf, every worker a burst more, and each
     * thread's cache a share; a power of two less one suits the pool. */
    uint32_t need = (uint32_t)nb_rxq * ((uint32_t)desc + 2u * burst) + 512u;
    uint32_t mbufs = 1023;
    while (mbufs < need)
        mbufs = mbufs * 2 + 1;
    char pool_name[RTE_MEMPOOL_NAMESIZE];
    snprintf(pool_name, sizeof(pool_name), "fcapa_rx_%u", port);
    int socket = rte_eth_dev_socket_id(port);
    struct rte_mempool *pool = rte_pktmbuf_pool_create(
        pool_name, mbufs, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE, socket < 0 ? SOCKET_ID_ANY : socket);
    if (pool == NULL) {
        snprintf(err, errlen,
                 "cannot make a pool of %u packet buffers (%u queue(s) x %u descriptors): %s; "
                 "give the EAL more memory (-m) or ask fewer descriptors (-d)",
                 mbufs, nb_rxq, desc, rte_strerror(rte_errno));
        return -ENOMEM;
    }
    info->mbufs = mbufs;
    for (uint16_t q = 0; q < nb_rxq; q++) {
        ret = rte_eth_rx_queue_setup(port, q, desc, socket < 0 ? SOCKET_ID_ANY : socket, NULL,
                                     pool);
        if (ret != 0) {
            snprintf(err, errlen, "cannot set up receive queue %u: %s", q, rte_strerror(-ret));
            return ret;
        }
    }
    for (uint16_t q = 0; q < nb_txq; q++) {
        ret = rte_eth_tx_queue_setup(port, q, 512, socket < 0 ? SOCKET_ID_ANY : socket, NULL);
        if (ret != 0) {
            snprintf(err, errlen, "cannot set up transmit queue %u: %s", q, rte_strerror(-ret));
            return ret;
        }
    }
    ret = rte_eth_dev_start(port);
    if (ret != 0) {
        snprintf(err, errlen, "cannot start the port: %s", rte_strerror(-ret));
        return ret;
    }
    /* Promiscuous: every frame on the wire, not just the port's own. A
     * driver without the notion (a file, a null device) is fine as it is. */
    ret = rte_eth_promiscuous_enable(port);
    if (ret != 0 && ret != -ENOTSUP) {
        snprintf(err, errlen, "cannot make the port promiscuous: %s", rte_strerror(-ret));
        return ret;
    }
    /* net_af_packet opens its sockets at probe time and they see every
     * interface until bound (it took frames of `lo` that way): the capture
     * starts now, what its queues already hold goes. Not for other
     * drivers: net_pcap's file is all there before the start. */
    struct rte_mbuf *stale[64];
    int stale_possible = strcmp(dev.driver_name, "net_af_packet") == 0;
    for (uint16_t q = 0; stale_possible && q < nb_rxq; q++) {
        for (uint32_t left = desc + 2u * burst + 64u; left > 0;) {
            uint16_t n = rte_eth_rx_burst(port, q, stale, 64);
            if (n == 0)
                break;
            rte_pktmbuf_free_bulk(stale, n);
            left = left > n ? left - n : 0;
        }
    }
    /* The counters start at the start of the capture. */
    rte_eth_stats_reset(port);
    return 0;
}

/* The port's counters: packets it handed over, missed for want of room on
 * the NIC, and refused for want of mbufs. */
int fcapa_port_stats(uint16_t port, uint64_t *ipackets, uint64_t *imissed, uint64_t *nombuf)
{
    struct rte_eth_stats stats;
    int ret = rte_eth_stats_get(port, &stats);
    if (ret != 0)
        return ret;
    *ipackets = stats.ipackets;
    *imissed = stats.imissed;
    *nombuf = stats.rx_nombuf;
    return 0;
}

int fcapa_link_up(uint16_t port)
{
    struct rte_eth_link link;
    if (rte_eth_link_get_nowait(port, &link) != 0)
        return 1; /* a driver that cannot tell: assume up */
    return link.link_status == RTE_ETH_LINK_UP;
}

/* Reads the device clock (for converting hardware timestamps). */
int fcapa_read_clock(uint16_t port, uint64_t *clock)
{
    return rte_eth_read_clock(port, clock);
}

void fcapa_port_close(uint16_t port)
{
    rte_eth_dev_stop(port);
    rte_eth_dev_close(port);
}

uint16_t fcapa_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
    return rte_eth_rx_burst(port, queue, pkts, n);
}

/* One received packet: its first segment's bytes, its whole length, and the
 * hardware timestamp when `ts_offset` >= 0 and the NIC set it. */
struct fcapa_pkt {
    const uint8_t *data;
    uint32_t data_len;
    uint32_t pkt_len;
    uint32_t nb_segs;
    uint64_t hw_ts;
    int has_hw_ts;
    int vlan_stripped; /* the driver took the outer tag out: it is in vlan_tci */
    uint16_t vlan_tci;
};

void fcapa_pkt_info(struct rte_mbuf *m, int ts_offset, uint64_t ts_flag, struct fcapa_pkt *out)
{
    out->data = rte_pktmbuf_mtod(m, const uint8_t *);
    out->data_len = m->data_len;
    out->pkt_len = m->pkt_len;
    out->nb_segs = m->nb_segs;
    out->vlan_stripped = (m->ol_flags & RTE_MBUF_F_RX_VLAN_STRIPPED) != 0;
    out->vlan_tci = m->vlan_tci;
    if (ts_offset >= 0 && (m->ol_flags & ts_flag)) {
        out->hw_ts = *RTE_MBUF_DYNFIELD(m, ts_offset, rte_mbuf_timestamp_t *);
        out->has_hw_ts = 1;
    } else {
        out->hw_ts = 0;
        out->has_hw_ts = 0;
    }
}

/* A packet of several segments (a driver that chains mbufs for big
 * frames) copied whole into `buf` of `len` >= pkt_len bytes. */
void fcapa_pkt_copy(struct rte_mbuf *m, uint8_t *buf, uint32_t len)
{
    const void *p = rte_pktmbuf_read(m, 0, len < m->pkt_len ? len : m->pkt_len, buf);
    if (p != NULL && p != buf)
        memcpy(buf, p, len < m->pkt_len ? len : m->pkt_len);
}

void fcapa_free_bulk(struct rte_mbuf **pkts, unsigned int n)
{
    rte_pktmbuf_free_bulk(pkts, n);
}
