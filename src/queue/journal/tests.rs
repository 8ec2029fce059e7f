//! The journal's own tests: positions, runs, a torn tail, damage mid-segment, deletion,
//! another format.

use super::*;

fn records(reader: &JournalReader) -> Vec<Vec<u8>> {
    reader
        .scan(Position::start_of(0))
        .filter_map(|r| match r.unwrap() {
            Scanned::Record { payload, .. } => Some(payload),
            Scanned::Damaged { .. } => None,
        })
        .collect()
}

#[test]
fn a_run_reads_whole_records_only_and_stops_at_damage() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(dir.path(), 1 << 20).unwrap();
    let records: Vec<Vec<u8>> = (0..10u8).map(|n| vec![n; 100 + n as usize]).collect();
    let positions = j.append(&records).unwrap();
    let end = j.end();
    let reader = j.reader();
    // A 500-byte run holds the first few whole records, not a cut one.
    let (run, ok) = reader.read_run(positions[0], end.offset, 500);
    assert!(ok.is_ok());
    assert!(!run.is_empty() && run.len() < 10, "{}", run.len());
    for (k, (at, payload)) in run.iter().enumerate() {
        assert_eq!((*at, payload), (positions[k], &records[k]));
    }
    // A run shorter than one record still yields that record.
    let (run, ok) = reader.read_run(positions[9], end.offset, 8);
    assert!(ok.is_ok());
    assert_eq!(run, vec![(positions[9], records[9].clone())]);
    // A flipped byte: the records before it, then the error.
    let path = dir.path().join(format!("{:020}.seg", positions[0].segment));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[positions[4].offset as usize + 20] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let (run, damaged) = reader.read_run(positions[0], end.offset, 1 << 20);
    assert_eq!(run.len(), 4);
    assert!(damaged.is_err());
}

#[test]
fn appends_read_back_by_position_and_in_order_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, report) = Journal::open(dir.path(), 256).unwrap();
    assert_eq!(report.truncated, None);
    let mut positions = Vec::new();
    for n in 0..20u8 {
        let batch = vec![vec![n; 40], vec![n + 100; 3]];
        positions.extend(j.append(&batch).unwrap());
    }
    let reader = j.reader();
    assert!(reader.segments().len() > 3, "{:?}", reader.segments());
    assert_eq!(reader.read_at(positions[6]).unwrap(), vec![3u8; 40]);
    assert_eq!(reader.read_at(positions[7]).unwrap(), vec![103u8; 3]);
    let all = records(&reader);
    assert_eq!(all.len(), 40);
    assert_eq!(all[39], vec![119u8; 3]);
    // A batch bigger than a segment gets a segment of its own.
    let big = j.append(&[vec![7u8; 1000]]).unwrap()[0];
    assert_eq!(big.offset, HEADER_LEN);
    assert_eq!(reader.read_at(big).unwrap().len(), 1000);
    drop(j);
    let (j, _) = Journal::open(dir.path(), 256).unwrap();
    assert_eq!(records(&j.reader()).len(), 41);
}

#[test]
fn a_torn_tail_is_truncated_and_appending_goes_on_after_the_last_valid_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(dir.path(), 1 << 20).unwrap();
    j.append(&[b"one".to_vec(), b"two".to_vec()]).unwrap();
    let end = j.end();
    drop(j);
    // A crash in the middle of writing the next frame.
    let path = segment_path(dir.path(), end.segment);
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    let mut partial = Vec::new();
    frame(&mut partial, b"three, never acknowledged");
    f.write_all(&partial[..partial.len() - 5]).unwrap();
    drop(f);
    let (mut j, report) = Journal::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(
        report.truncated,
        Some((end.offset, partial.len() as u64 - 5))
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), end.offset);
    j.append(&[b"four".to_vec()]).unwrap();
    assert_eq!(
        records(&j.reader()),
        vec![b"one".to_vec(), b"two".to_vec(), b"four".to_vec()]
    );
}

#[test]
fn a_flipped_byte_mid_segment_is_reported_and_the_rest_is_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(dir.path(), 1 << 20).unwrap();
    let at = j
        .append(&[b"first".to_vec(), b"second".to_vec(), b"third".to_vec()])
        .unwrap();
    drop(j);
    let path = segment_path(dir.path(), at[1].segment);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[usize::try_from(at[1].offset).unwrap() + 14] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let (j, report) = Journal::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(
        report.truncated, None,
        "damage mid-segment is not a torn tail"
    );
    let reader = j.reader();
    let items: Vec<Scanned> = reader
        .scan(Position::start_of(0))
        .map(Result::unwrap)
        .collect();
    assert_eq!(items.len(), 3, "{items:?}");
    assert_eq!(
        items[1],
        Scanned::Damaged {
            at: at[1],
            bytes: at[2].offset - at[1].offset
        }
    );
    assert!(matches!(&items[2], Scanned::Record { payload, .. } if payload == b"third"));
    assert!(matches!(
        reader.read_at(at[1]),
        Err(JournalError::BadRecord { .. })
    ));
    assert_eq!(reader.read_at(at[2]).unwrap(), b"third");
}

#[test]
fn deleted_segments_are_gone_for_readers_and_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(dir.path(), 1 << 20).unwrap();
    let first = j.append(&[b"old".to_vec()]).unwrap()[0];
    j.rotate().unwrap();
    let second = j.append(&[b"new".to_vec()]).unwrap()[0];
    j.delete_segment(first.segment).unwrap();
    // The active segment is never deleted.
    j.delete_segment(second.segment).unwrap();
    let reader = j.reader();
    assert!(matches!(
        reader.read_at(first),
        Err(JournalError::NoSegment(_))
    ));
    assert_eq!(records(&reader), vec![b"new".to_vec()]);
    drop(j);
    let (j, report) = Journal::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(report.segments, 1);
    assert_eq!(j.reader().read_at(second).unwrap(), b"new");
}

#[test]
fn a_segment_of_another_format_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        segment_path(dir.path(), 1),
        b"HRJL\x09\x00\x00\x00\x01\0\0\0\0\0\0\0",
    )
    .unwrap();
    let err = Journal::open(dir.path(), 1 << 20).unwrap_err().to_string();
    assert!(err.contains("segment format 9"), "{err}");
    assert!(err.contains("00000000000000000001.seg"), "{err}");
}
