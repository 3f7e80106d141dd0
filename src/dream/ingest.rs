//! Reading `sessions/*.jsonl` (DESIGN §5). (Being written.)
