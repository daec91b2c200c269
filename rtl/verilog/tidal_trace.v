// tidal_trace: simulation-only writer of the instruction-issue trace (see docs/rtl.md).
//
// When the plusarg +TIDAL_TRACE=<file> is given, every cycle in which core c issues an
// instruction adds the line "<cycle> <c> <pc>" (decimal) to <file>, cores in index order
// within a cycle; the file is flushed in every done cycle, so a testbench can read it as
// soon as it sees done. Without the plusarg the module does nothing. The testbench joins
// each line with the instruction word from the program to get sim.vm's trace records;
// doing this in Verilog keeps Python out of the per-cycle path.
module tidal_trace #(
    parameter integer NCORES = 1
) (
    input                    clk,
    input                    rst,
    input      [31:0]        cycle,
    input      [NCORES-1:0]  valid,
    input      [16*NCORES-1:0] pc,
    input                    done
);
    reg [8*1024-1:0] fname;
    integer fd;
    integer c;
    initial begin
        fd = 0;
        if ($value$plusargs("TIDAL_TRACE=%s", fname))
            fd = $fopen(fname, "w");
    end

    always @(posedge clk) begin
        if (fd != 0 && !rst) begin
            for (c = 0; c < NCORES; c = c + 1)
                if (valid[c])
                    $fwrite(fd, "%0d %0d %0d\n", cycle, c, pc[16*c +: 16]);
            if (done)
                $fflush(fd);
        end
    end
endmodule
