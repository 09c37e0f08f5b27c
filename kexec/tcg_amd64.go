package kexec

import "encoding/binary"

func cpuid(leaf, sub uint32) (eax, ebx, ecx, edx uint32)

// UnderTCG says whether this machine is QEMU's TCG, the emulator: its CPUID hypervisor leaf
// (0x40000000) names "TCGTCGTCGTCG", as KVM's names "KVMKVMKVM". Only read when CPUID leaf 1
// says a hypervisor is there.
func UnderTCG() bool {
	if _, _, ecx, _ := cpuid(1, 0); ecx&(1<<31) == 0 {
		return false
	}
	_, b, c, d := cpuid(0x40000000, 0)
	var sig [12]byte
	binary.LittleEndian.PutUint32(sig[0:], b)
	binary.LittleEndian.PutUint32(sig[4:], c)
	binary.LittleEndian.PutUint32(sig[8:], d)
	return string(sig[:]) == "TCGTCGTCGTCG"
}
