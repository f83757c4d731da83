#include "textflag.h"

// func indexPair(s []byte, b1, b2 byte, d int) int
// The first i with s[i] == b1 and s[i+d] == b2, testing 64 positions at a
// time, then 32, while a whole block of both fits in s; if none, -(k+1)
// where k is the first position not tested (the caller finishes the tail).
TEXT ·indexPair(SB), NOSPLIT, $0-48
	MOVQ s_base+0(FP), SI
	MOVQ s_len+8(FP), BX
	MOVBLZX b1+24(FP), AX
	MOVBLZX b2+25(FP), CX
	MOVQ d+32(FP), DX
	SUBQ DX, BX // a block at i fits while i+32 <= len-d
	XORQ R9, R9
	MOVQ AX, X1
	VPBROADCASTB X1, Y1
	MOVQ CX, X2
	VPBROADCASTB X2, Y2
	LEAQ (SI)(DX*1), R11
	MOVQ BX, R8
	SUBQ $64, R8
	JMP  check64

loop64:
	VPCMPEQB (SI)(R9*1), Y1, Y3
	VPCMPEQB (R11)(R9*1), Y2, Y4
	VPCMPEQB 32(SI)(R9*1), Y1, Y5
	VPCMPEQB 32(R11)(R9*1), Y2, Y6
	VPAND    Y3, Y4, Y3
	VPAND    Y5, Y6, Y5
	VPOR     Y3, Y5, Y6
	VPTEST   Y6, Y6
	JNZ      found64
	ADDQ     $64, R9

check64:
	CMPQ R9, R8
	JLE  loop64

	MOVQ BX, R8
	SUBQ $32, R8
	CMPQ R9, R8
	JGT  done
	VPCMPEQB  (SI)(R9*1), Y1, Y3
	VPCMPEQB  (R11)(R9*1), Y2, Y4
	VPAND     Y3, Y4, Y3
	VPMOVMSKB Y3, AX
	TESTL     AX, AX
	JNZ       found
	ADDQ      $32, R9

done:
	NOTQ R9
	MOVQ R9, ret+40(FP)
	VZEROUPPER
	RET

found64:
	VPMOVMSKB Y3, AX
	TESTL     AX, AX
	JNZ       found
	ADDQ      $32, R9
	VPMOVMSKB Y5, AX

found:
	BSFL AX, AX
	ADDQ AX, R9
	MOVQ R9, ret+40(FP)
	VZEROUPPER
	RET

// func indexPairCount(s []byte, b1, b2 byte, d int) (pos, nl int)
// indexPair that also counts the newlines it passes: pos is what indexPair
// returns (the first i with s[i] == b1 and s[i+d] == b2, or -(k+1) with k
// the first position not tested) and nl the number of '\n' in s[:q], where
// q is pos rounded down to a multiple of 32 if found, else k. The line count
// then costs a compare and a byte add per block of the search's own loads
// instead of a second pass. 128 positions per step; the newline compares
// (0 or -1 per byte) are summed in byte lanes (Y10), folded into quadwords
// (Y11) with VPSADBW every 63 steps, before a lane could pass 255.
TEXT ·indexPairCount(SB), NOSPLIT, $0-56
	MOVQ s_base+0(FP), SI
	MOVQ s_len+8(FP), BX
	MOVBLZX b1+24(FP), AX
	MOVBLZX b2+25(FP), CX
	MOVQ d+32(FP), DX
	SUBQ DX, BX
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
	VPXOR Y10, Y10, Y10
	VPXOR Y11, Y11, Y11
	MOVQ $63, R12
	MOVQ BX, R8
	SUBQ $128, R8
	JMP  check128

loop128:
	VMOVDQU  (SI)(R9*1), Y5
	VMOVDQU  32(SI)(R9*1), Y6
	VMOVDQU  64(SI)(R9*1), Y7
	VMOVDQU  96(SI)(R9*1), Y8
	VPCMPEQB Y1, Y5, Y3
	VPCMPEQB (R11)(R9*1), Y2, Y4
	VPAND    Y3, Y4, Y13
	VPCMPEQB Y1, Y6, Y3
	VPCMPEQB 32(R11)(R9*1), Y2, Y4
	VPAND    Y3, Y4, Y14
	VPCMPEQB Y1, Y7, Y3
	VPCMPEQB 64(R11)(R9*1), Y2, Y4
	VPAND    Y3, Y4, Y9
	VPCMPEQB Y1, Y8, Y3
	VPCMPEQB 96(R11)(R9*1), Y2, Y4
	VPAND    Y3, Y4, Y12
	VPOR     Y13, Y14, Y3
	VPOR     Y9, Y12, Y4
	VPOR     Y3, Y4, Y3
	VPTEST   Y3, Y3
	JNZ      found128
	VPCMPEQB Y0, Y5, Y5
	VPCMPEQB Y0, Y6, Y6
	VPCMPEQB Y0, Y7, Y7
	VPCMPEQB Y0, Y8, Y8
	VPADDB   Y5, Y6, Y5
	VPADDB   Y7, Y8, Y7
	VPADDB   Y5, Y7, Y5
	VPSUBB   Y5, Y10, Y10
	ADDQ     $128, R9
	DECQ     R12
	JNZ      check128
	// Every 63 steps, before a byte lane can pass 255: fold into Y11.
	VPXOR    Y12, Y12, Y12
	VPSADBW  Y12, Y10, Y10
	VPADDQ   Y10, Y11, Y11
	VPXOR    Y10, Y10, Y10
	MOVQ     $63, R12

check128:
	CMPQ R9, R8
	JLE  loop128

	MOVQ BX, R8
	SUBQ $32, R8

loop32:
	CMPQ      R9, R8
	JGT       notfound
	VMOVDQU   (SI)(R9*1), Y5
	VPCMPEQB  Y1, Y5, Y3
	VPCMPEQB  (R11)(R9*1), Y2, Y4
	VPAND     Y4, Y3, Y3
	VPMOVMSKB Y3, AX
	TESTL     AX, AX
	JNZ       found
	VPCMPEQB  Y0, Y5, Y5
	VPMOVMSKB Y5, AX
	POPCNTL   AX, AX
	ADDQ      AX, R10
	ADDQ      $32, R9
	JMP       loop32

found128:
	VPMOVMSKB Y13, AX
	TESTL     AX, AX
	JNZ       found
	VPCMPEQB  Y0, Y5, Y5
	VPMOVMSKB Y5, CX
	POPCNTL   CX, CX
	ADDQ      CX, R10
	ADDQ      $32, R9
	VPMOVMSKB Y14, AX
	TESTL     AX, AX
	JNZ       found
	VPCMPEQB  Y0, Y6, Y6
	VPMOVMSKB Y6, CX
	POPCNTL   CX, CX
	ADDQ      CX, R10
	ADDQ      $32, R9
	VPMOVMSKB Y9, AX
	TESTL     AX, AX
	JNZ       found
	VPCMPEQB  Y0, Y7, Y7
	VPMOVMSKB Y7, CX
	POPCNTL   CX, CX
	ADDQ      CX, R10
	ADDQ      $32, R9
	VPMOVMSKB Y12, AX

found:
	BSFL AX, AX
	ADDQ AX, R9
	MOVQ R9, R13
	JMP  sum

notfound:
	MOVQ R9, R13
	NOTQ R13

sum:
	VPXOR        Y12, Y12, Y12
	VPSADBW      Y12, Y10, Y10
	VPADDQ       Y10, Y11, Y11
	VEXTRACTI128 $1, Y11, X12
	VPADDQ       X12, X11, X11
	VPSHUFD      $0x4e, X11, X12
	VPADDQ       X12, X11, X11
	MOVQ         X11, AX
	ADDQ         AX, R10
	MOVQ         R13, pos+40(FP)
	MOVQ         R10, nl+48(FP)
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
