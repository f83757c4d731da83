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

// func indexPairCount(s []byte, b1, b2 byte, d int) (pos, nl int)
// indexPair that also counts the newlines it passes: pos is what indexPair
// returns (the first i with s[i] == b1 and s[i+d] == b2, or -(k+1) with k
// the first position not tested) and nl the number of '\n' in s[:q], where
// q is pos rounded down to a multiple of 32 if found, else k. The line count
// then costs one compare and a popcount per block of the search's own loads
// instead of a second pass. 64 positions per iteration.
TEXT ·indexPairCount(SB), NOSPLIT, $0-56
	MOVQ s_base+0(FP), SI
	MOVQ s_len+8(FP), BX
	MOVBLZX b1+24(FP), AX
	MOVBLZX b2+25(FP), CX
	MOVQ d+32(FP), DX
	SUBQ DX, BX // a block at i fits while i+32 <= len-d
	LEAQ (SI)(DX*1), R11
	XORQ R9, R9
	XORQ R10, R10
	MOVQ AX, X1
	VPBROADCASTB X1, Y1
	MOVQ CX, X2
	VPBROADCASTB X2, Y2
	MOVL $10, AX
	MOVQ AX, X0
	VPBROADCASTB X0, Y0
	MOVQ BX, R8
	SUBQ $64, R8
	JMP  check64

loop64:
	VMOVDQU   (SI)(R9*1), Y5
	VMOVDQU   32(SI)(R9*1), Y6
	VPCMPEQB  Y1, Y5, Y3
	VPCMPEQB  Y1, Y6, Y4
	VPCMPEQB  (R11)(R9*1), Y2, Y7
	VPCMPEQB  32(R11)(R9*1), Y2, Y8
	VPAND     Y7, Y3, Y3
	VPAND     Y8, Y4, Y4
	VPOR      Y3, Y4, Y9
	VPTEST    Y9, Y9
	JNZ       found64
	VPCMPEQB  Y0, Y5, Y5
	VPCMPEQB  Y0, Y6, Y6
	VPMOVMSKB Y5, AX
	VPMOVMSKB Y6, CX
	SHLQ      $32, CX
	ORQ       CX, AX
	POPCNTQ   AX, AX
	ADDQ      AX, R10
	ADDQ      $64, R9

check64:
	CMPQ R9, R8
	JLE  loop64

	// At most one more 32-position block.
	MOVQ      BX, R8
	SUBQ      $32, R8
	CMPQ      R9, R8
	JGT       notfound
	VMOVDQU   (SI)(R9*1), Y5
	VPCMPEQB  Y1, Y5, Y3
	VPCMPEQB  (R11)(R9*1), Y2, Y7
	VPAND     Y7, Y3, Y3
	VPMOVMSKB Y3, AX
	TESTL     AX, AX
	JNZ       found
	VPCMPEQB  Y0, Y5, Y5
	VPMOVMSKB Y5, AX
	POPCNTL   AX, AX
	ADDQ      AX, R10
	ADDQ      $32, R9

notfound:
	NOTQ R9
	MOVQ R9, pos+40(FP)
	MOVQ R10, nl+48(FP)
	VZEROUPPER
	RET

found64:
	VPMOVMSKB Y3, AX
	TESTL     AX, AX
	JNZ       found
	// The hit is in the second block: the first one is passed.
	VPCMPEQB  Y0, Y5, Y5
	VPMOVMSKB Y5, AX
	POPCNTL   AX, AX
	ADDQ      AX, R10
	ADDQ      $32, R9
	VPMOVMSKB Y4, AX

found:
	BSFL AX, AX
	ADDQ AX, R9
	MOVQ R9, pos+40(FP)
	MOVQ R10, nl+48(FP)
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
