// bench/profile.ts's own-vs-hosted classifier over real `perf script -F comm,tid,cpu,ip,sym` blocks
// (copied from profiles of bench/datapath.ts --perf on the two-host bed, kernel 6.18; frames
// innermost first). If a rule breaks (e.g. a nested netif_receive_skb inside softirq taken as a
// process-context receive), these fail.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { classifyStack, parseBlock, summarise } from '../../bench/profile';
const sendSoftirqUdp = `vxnet-wk1 24214 [000] 
	ffffffff82203249 _raw_spin_unlock_irqrestore
	ffffffff81e3513e sock_def_readable
	ffffffff82047550 __udp_enqueue_schedule_skb
	ffffffff8204795d udp_queue_rcv_one_skb
	ffffffff82047e04 udp_unicast_rcv_skb
	ffffffff81ff84c3 ip_protocol_deliver_rcu
	ffffffff81ff8621 ip_local_deliver_finish
	ffffffff81e6869d __netif_receive_skb_one_core
	ffffffff81e68983 process_backlog
	ffffffff81e69061 __napi_poll
	ffffffff81e695bb net_rx_action
	ffffffff8136213d handle_softirqs
	ffffffff81361b9b do_softirq.part.0
	ffffffff81362424 __local_bh_enable_ip
	ffffffff81e659bc __dev_queue_xmit
	ffffffff81ffcac1 ip_finish_output2
	ffffffff81fff10f ip_output
	ffffffff82000651 ip_send_skb
	ffffffff820426f7 udp_send_skb
	ffffffff82046f66 udp_sendmsg
	ffffffff81e2ed0f ____sys_sendmsg
	ffffffff81e2fb3d ___sys_sendmsg
	ffffffff81e32014 __sys_sendmmsg
	ffffffff81e3215d __x64_sys_sendmmsg
	ffffffff821ef691 do_syscall_64
	ffffffff81000130 entry_SYSCALL_64_after_hwframe
	          10b106 __sendmmsg
	           22dab vxnet::UdpSendBatch::flush<vxnet::TxPass::send(unsigned long)::{lambda(vxnet::SendTag const&, bool)#1}>
	           230b8 vxnet::TxPass::add
	           23560 vxnet::TxPass::tso
	           1b8cd vxnet::Datapath::worker_loop
	           d44a3 [unknown]`;
const sendSoftirqBridgeNf = `vxnet-wk1 24214 [000] 
	ffffffff81e428e0 skb_release_data
	ffffffff81e42c01 pskb_expand_head
	ffffffff81ffa67d ip_forward
	ffffffff8217641d ip_sabotage_in
	ffffffff81f2af93 nf_hook_slow
	ffffffff81ff8d31 ip_rcv
	ffffffff81e6869d __netif_receive_skb_one_core
	ffffffff81e6889f netif_receive_skb
	ffffffff8215b799 br_handle_frame_finish
	ffffffff821777e8 br_nf_hook_thresh
	ffffffff821779e3 br_nf_pre_routing_finish
	ffffffff82177e36 br_nf_pre_routing
	ffffffff8215bb59 br_handle_frame
	ffffffff81e671b7 __netif_receive_skb_core.constprop.0
	ffffffff81e68649 __netif_receive_skb_one_core
	ffffffff81e68983 process_backlog
	ffffffff81e69061 __napi_poll
	ffffffff81e695bb net_rx_action
	ffffffff8136213d handle_softirqs
	ffffffff81361b9b do_softirq.part.0
	ffffffff81362424 __local_bh_enable_ip
	ffffffff81e659bc __dev_queue_xmit
	ffffffff81ffcac1 ip_finish_output2
	ffffffff81fff10f ip_output
	ffffffff82000651 ip_send_skb
	ffffffff820426f7 udp_send_skb
	ffffffff82046f66 udp_sendmsg
	ffffffff81e2ed0f ____sys_sendmsg
	ffffffff81e2fb3d ___sys_sendmsg
	ffffffff81e32014 __sys_sendmmsg
	ffffffff81e3215d __x64_sys_sendmmsg
	ffffffff821ef691 do_syscall_64
	ffffffff81000130 entry_SYSCALL_64_after_hwframe
	          10b106 __sendmmsg
	           22dab vxnet::UdpSendBatch::flush<vxnet::TxPass::send(unsigned long)::{lambda(vxnet::SendTag const&, bool)#1}>
	           1b93b vxnet::Datapath::worker_loop
	           d44a3 [unknown]`;
const tunWriteRx = `vxnet-wk1 24226 [001] 
	ffffffff81ffa5f1 ip_forward
	ffffffff81e6869d __netif_receive_skb_one_core
	ffffffff81e6889f netif_receive_skb
	ffffffff81db7228 tun_get_user
	ffffffff81db80b7 tun_chr_write_iter
	ffffffff816b873c do_iter_readv_writev
	ffffffff816ba08d vfs_writev
	ffffffff816ba37a do_writev
	ffffffff821ef691 do_syscall_64
	ffffffff81000130 entry_SYSCALL_64_after_hwframe
	           fde9d __GI___writev
	           302a8 vxnet::TcpCoalescer::push<vxnet::TunQueue::Emit>
	           2fc18 vxnet::TunQueue::deliver
	           24532 vxnet::RxPass::datagram
	           2487f vxnet::RxPass::run
	           1b99f vxnet::Datapath::worker_loop
	           d44a3 [unknown]`;
const tunWriteSoftirqTcp = `vxnet-wk1 24226 [001] 
	ffffffff8201f5a4 tcp_ack
	ffffffff82021d4b tcp_rcv_established
	ffffffff82034550 tcp_v4_do_rcv
	ffffffff820369a2 tcp_v4_rcv
	ffffffff81ff8438 ip_protocol_deliver_rcu
	ffffffff81ff8621 ip_local_deliver_finish
	ffffffff81e6869d __netif_receive_skb_one_core
	ffffffff81e68983 process_backlog
	ffffffff81e69061 __napi_poll
	ffffffff81e695bb net_rx_action
	ffffffff8136213d handle_softirqs
	ffffffff81361b9b do_softirq.part.0
	ffffffff81362424 __local_bh_enable_ip
	ffffffff81db6c86 tun_get_user
	ffffffff81db80b7 tun_chr_write_iter
	ffffffff816b873c do_iter_readv_writev
	ffffffff816ba08d vfs_writev
	ffffffff816ba37a do_writev
	ffffffff821ef691 do_syscall_64
	ffffffff81000130 entry_SYSCALL_64_after_hwframe
	           fde9d __GI___writev
	           2f9fc vxnet::TunQueue::flush
	           24801 vxnet::RxPass::run
	           1b99f vxnet::Datapath::worker_loop
	           d44a3 [unknown]`;
const irqExitInTunWrite = `vxnet-wk1 24226 [001] 
	ffffffff81ed9f65 eth_type_trans
	ffffffff81e59a9b __dev_forward_skb2
	ffffffff81dbd900 veth_xmit
	ffffffff81e653bf dev_hard_start_xmit
	ffffffff81e65f94 __dev_queue_xmit
	ffffffff81ffcac1 ip_finish_output2
	ffffffff81fff10f ip_output
	ffffffff81fff5ab __ip_queue_xmit
	ffffffff820281e0 __tcp_transmit_skb
	ffffffff82029b4d tcp_write_xmit
	ffffffff8202c16a tcp_tsq_handler
	ffffffff8202c2d9 tcp_pace_kick
	ffffffff81420bee __hrtimer_run_queues
	ffffffff81420da8 hrtimer_run_softirq
	ffffffff8136213d handle_softirqs
	ffffffff8136238e __irq_exit_rcu
	ffffffff821f46d5 sysvec_apic_timer_interrupt
	ffffffff81000e06 asm_sysvec_apic_timer_interrupt
	ffffffff81b6c6b4 _copy_from_iter
	ffffffff81b6d919 copy_page_from_iter
	ffffffff81e4bba4 skb_copy_datagram_from_iter
	ffffffff81db6d0b tun_get_user
	ffffffff81db80b7 tun_chr_write_iter
	ffffffff816b873c do_iter_readv_writev
	ffffffff816ba08d vfs_writev
	ffffffff816ba37a do_writev
	ffffffff821ef691 do_syscall_64
	ffffffff81000130 entry_SYSCALL_64_after_hwframe
	           fde9d __GI___writev
	           2f9fc vxnet::TunQueue::flush
	           24801 vxnet::RxPass::run
	           1b99f vxnet::Datapath::worker_loop
	           d44a3 [unknown]`;
const ownTunRead = `vxnet-wk1 24214 [000] 
	ffffffff81b6ccb0 _copy_to_iter
	ffffffff81e4b922 __skb_datagram_iter
	ffffffff81e4c6af skb_copy_datagram_iter
	ffffffff81db2d37 tun_do_read
	ffffffff81db36d8 tun_chr_read_iter
	ffffffff816badaa vfs_read
	ffffffff816bb886 ksys_read
	ffffffff821ef691 do_syscall_64
	ffffffff81000130 entry_SYSCALL_64_after_hwframe
	           f82ec read
	           1b89e vxnet::Datapath::worker_loop
	           d44a3 [unknown]`;
const kernelIperfSend = `iperf3 24191 [000] 
	ffffffff82043e52 udp_set_csum
	ffffffff82089561 udp_tunnel_xmit_skb
	ffffffff81dd701c vxlan_xmit_one
	ffffffff81dd7cfa vxlan_xmit
	ffffffff81e653bf dev_hard_start_xmit
	ffffffff81e65f94 __dev_queue_xmit
	ffffffff81ffcac1 ip_finish_output2
	ffffffff81fff10f ip_output
	ffffffff8217641d ip_sabotage_in
	ffffffff81f2af93 nf_hook_slow
	ffffffff81ff8d31 ip_rcv
	ffffffff81e6869d __netif_receive_skb_one_core
	ffffffff81e6889f netif_receive_skb
	ffffffff8215b799 br_handle_frame_finish
	ffffffff821777e8 br_nf_hook_thresh
	ffffffff821779e3 br_nf_pre_routing_finish
	ffffffff82177e36 br_nf_pre_routing
	ffffffff8215bb59 br_handle_frame
	ffffffff81e671b7 __netif_receive_skb_core.constprop.0
	ffffffff81e68649 __netif_receive_skb_one_core
	ffffffff81e68983 process_backlog
	ffffffff81e69061 __napi_poll
	ffffffff81e695bb net_rx_action
	ffffffff8136213d handle_softirqs
	ffffffff81361b9b do_softirq.part.0
	ffffffff81362424 __local_bh_enable_ip
	ffffffff81e659bc __dev_queue_xmit
	ffffffff81ffcac1 ip_finish_output2
	ffffffff81fff10f ip_output
	ffffffff81fff5ab __ip_queue_xmit
	ffffffff820281e0 __tcp_transmit_skb
	ffffffff82029b4d tcp_write_xmit
	ffffffff8202afa5 __tcp_push_pending_frames
	ffffffff82022081 tcp_rcv_established
	ffffffff82034550 tcp_v4_do_rcv
	ffffffff81e379f1 __release_sock
	ffffffff81e37aab release_sock
	ffffffff82010de5 tcp_sendmsg
	ffffffff81e2eed9 sock_write_iter
	ffffffff816bb758 vfs_write
	ffffffff816bba2a ksys_write
	ffffffff821ef691 do_syscall_64
	ffffffff81000130 entry_SYSCALL_64_after_hwframe
	           f8350 __GI___libc_write
	90430b60cce879b2 [unknown]`;
const ksoftirqd = `ksoftirqd/0    14 [000] 
	ffffffff81e425d6 skb_release_head_state
	ffffffff81e44f08 kfree_skb_partial
	ffffffff82021753 tcp_data_queue
	ffffffff82021dee tcp_rcv_established
	ffffffff82034550 tcp_v4_do_rcv
	ffffffff820369a2 tcp_v4_rcv
	ffffffff81ff8438 ip_protocol_deliver_rcu
	ffffffff81ff8621 ip_local_deliver_finish
	ffffffff81e6869d __netif_receive_skb_one_core
	ffffffff81e68983 process_backlog
	ffffffff81e69061 __napi_poll
	ffffffff81e695bb net_rx_action
	ffffffff8136213d handle_softirqs
	ffffffff81362bdf run_ksoftirqd
	ffffffff813996ff smpboot_thread_fn
	ffffffff8138bbe8 kthread
	ffffffff8130b731 ret_from_fork
	ffffffff81248fea ret_from_fork_asm`;

function cls(block: string) {
  const p = parseBlock(block);
  assert.ok(p, 'block parses');
  return classifyStack(p.frames);
}

test('softirq run at our sendmmsg bh-enable is hosted in send: the peer UDP socket receive', () => {
  assert.deepEqual(cls(sendSoftirqUdp), { hosted: true, context: 'send', via: 'softirq', label: 'hosted: softirq in send' });
});

test('a bridge-netfilter netif_receive_skb nested in softirq is softirq work, not a process-context receive', () => {
  const c = cls(sendSoftirqBridgeNf);
  assert.equal(c.via, 'softirq');
  assert.equal(c.context, 'send');
});

test('netif_receive_skb called by the TUN write itself: host forwarding in process context, hosted in tun write', () => {
  assert.deepEqual(cls(tunWriteRx), { hosted: true, context: 'tun write', via: 'rx', label: 'hosted: receive path in process context in tun write' });
});

test('the container TCP stack in the softirq of our TUN write is hosted in tun write', () => {
  const c = cls(tunWriteSoftirqTcp);
  assert.equal(c.label, 'hosted: softirq in tun write');
});

test('softirq at interrupt exit inside our TUN write copy belongs to the interrupt, not to the TUN write', () => {
  const c = cls(irqExitInTunWrite);
  assert.equal(c.context, 'interrupt');
  assert.equal(c.via, 'softirq');
});

test('our own TUN read copy is own work', () => {
  assert.deepEqual(cls(ownTunRead), { hosted: false, label: 'own' });
});

test('kernel vxlan: the whole forwarding path in the softirq of iperf3 send is hosted in send', () => {
  assert.equal(cls(kernelIperfSend).label, 'hosted: softirq in send');
});

test('ksoftirqd work is softirq in a kthread', () => {
  assert.equal(cls(ksoftirqd).label, 'hosted: softirq in kthread');
});

test('summarise splits by process kind and counts own copies and hosted groups', () => {
  const script = [sendSoftirqUdp, sendSoftirqBridgeNf, tunWriteRx, tunWriteSoftirqTcp, irqExitInTunWrite, ownTunRead, kernelIperfSend, ksoftirqd].join('\n\n') + '\n';
  const s = summarise(script);
  assert.equal(s.samples, 8);
  assert.deepEqual(s.split['vxnet workers'], {
    'hosted: softirq in send': 2,
    'hosted: receive path in process context in tun write': 1,
    'hosted: softirq in tun write': 1,
    'hosted: softirq in interrupt': 1,
    own: 1,
  });
  assert.deepEqual(s.split['iperf3 (both ends, incl. their softirq)'], { 'hosted: softirq in send': 1 });
  assert.equal(s.ownCopies['vxnet workers'], 1);
  assert.equal(s.workerOwnJobs['tun read'], 1);
  assert.equal(s.hostedWhat['vxnet workers']['in send: UDP receive into a socket (__udp4_lib_rcv)'], 1);
  assert.equal(s.hostedWhat['vxnet workers']['in tun write: TCP receive + ACK generation (tcp_v4_rcv)'], 1);
});

test('the checksum loop counts as checksum work wherever it is called from; the rest of the coalescer as coalescing', () => {
  const user = (leaf: string) => `vxnet-bk1 24214 [000] 
	           33910 ${leaf}
	           2a1c0 vxnet::TcpCoalescer::parse
	           1b89e vxnet::Datapath::worker_loop
	           d44a3 [unknown]`;
  const s = summarise([user('vxnet::detail::csum_words128_avx2'), user('vxnet::detail::csum_partial_impl<true>'), user('vxnet::TcpCoalescer::merge')].join('\n\n') + '\n');
  assert.deepEqual(s.workerJobs, { 'checksums + segment (user)': 2, 'coalesce (user)': 1 });
});
