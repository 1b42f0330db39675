{{ declarative_segment() }}
