#include "textflag.h"

// func indexPair(s []byte, b1, b2 byte, d int) int
// The first i with s[i] == b1 and s[i+d] == b2, testing 32 positions at a
// time while a whole block of both fits in s; if none, -(k+1) where k is
// the first position not tested (the caller finishes the tail).
TEXT ·indexPair(SB), NOSPLIT, $0-48
	MOVQ s_base+0(FP), SI
	MOVQ s_len+8(FP), BX
	MOVBLZX b1+24(FP), AX
	MOVBLZX b2+25(FP), CX
	MOVQ d+32(FP), DX
	MOVQ BX, R8
	SUBQ DX, R8
	SUBQ $32, R8
	XORQ R9, R9
	MOVQ AX, X1
	VPBROADCASTB X1, Y1
	MOVQ CX, X2
	VPBROADCASTB X2, Y2
	LEAQ (SI)(DX*1), R11

loop:
	CMPQ R9, R8
	JGT  done
	VPCMPEQB (SI)(R9*1), Y1, Y3
	VPCMPEQB (R11)(R9*1), Y2, Y4
	VPAND    Y3, Y4, Y3
	VPMOVMSKB Y3, AX
	TESTL    AX, AX
	JNZ      found
	ADDQ     $32, R9
	JMP      loop

found:
	BSFL AX, AX
	ADDQ AX, R9
	MOVQ R9, ret+40(FP)
	VZEROUPPER
	RET

done:
	NOTQ R9
	MOVQ R9, ret+40(FP)
	VZEROUPPER
	RET

// func cpuid(leaf, sub uint32) (a, b, c, d uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL leaf+0(FP), AX
	MOVL sub+4(FP), CX
	CPUID
	MOVL AX, a+8(FP)
	MOVL BX, b+12(FP)
	MOVL CX, c+16(FP)
	MOVL DX, d+20(FP)
	RET

// func xgetbv0() uint32
TEXT ·xgetbv0(SB), NOSPLIT, $0-4
	XORL CX, CX
	XGETBV
	MOVL AX, ret+0(FP)
	RET
